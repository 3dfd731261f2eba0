"""The output step: set the workflow's output."""

from workflows.steps.base import StepType, register


@register
class Output(StepType):
    """Set the workflow's output (the last output step run wins)."""

    name = "output"
    pure = True
    label = "Output (set the workflow's output)"
    sets_output = True
    schema = {
        "type": "object",
        "properties": {"value": {}},
        "required": ["value"],
        "additionalProperties": False,
    }

    def run(self, resolved, ctx):
        return resolved["value"]
