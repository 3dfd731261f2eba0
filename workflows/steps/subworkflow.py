"""The sub-workflow step: start another workflow as a child run (queued, or run in
place and waited for: workflows/services/children.py)."""

from workflows.steps.base import StepType, register


@register
class Subworkflow(StepType):
    """Run another workflow (by name) with ``input`` as its body: a child
    execution with its own uid, linked to this one. ``wait`` (default true) runs
    it here and makes its output this step's output (its failure fails this
    step); ``wait: false`` queues it and goes on at once with ``{"uid": "…"}``.
    Sub-workflows nest at most IOLINKER_SUBWORKFLOW_DEPTH deep."""

    name = "subworkflow"
    label = "Sub-workflow (call another workflow)"
    schema = {
        "type": "object",
        "properties": {
            "workflow": {"type": "string", "minLength": 1},
            "input": {},
            "wait": {"type": "boolean"},
        },
        "required": ["workflow"],
        "additionalProperties": False,
    }

    def run(self, resolved, ctx):
        return ctx.engine.run_child(
            workflow=resolved["workflow"],
            body=resolved.get("input", {}),
            wait=resolved.get("wait", True),
            path=ctx.path,
            timeout=ctx.deadline,
        )
