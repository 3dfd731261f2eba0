"""The loop step: run a list of steps once per item."""

from workflows.steps.base import StepError, StepType, register

DEFAULT_MAX_ITERATIONS = 100
MAX_ITERATIONS = 10_000


@register
class Loop(StepType):
    """Run ``steps`` (a list of steps, as in a workflow) once per element of
    ``items``, in order. Inside, ``item`` and ``index`` name the element, and
    ``steps.<key>`` sees the body's outputs of this iteration and the workflow's
    earlier steps. Output: the list of each iteration's output (its last
    ``output`` step's value, else its last step's). A list longer than
    ``max_iterations`` (default 100, at most 10,000) fails the step. A failing
    body step fails the loop step (its own retries and on-error policy apply).
    To run a sub-workflow per item, put a ``subworkflow`` step in the body."""

    name = "loop"
    label = "Loop (run steps for each item)"
    literal_keys = frozenset({"steps"})
    schema = {
        "type": "object",
        "properties": {
            "items": {},
            "steps": {"type": "array", "minItems": 1, "maxItems": 200, "items": {"type": "object"}},
            "max_iterations": {"type": "integer", "minimum": 1, "maximum": MAX_ITERATIONS},
        },
        "required": ["items", "steps"],
        "additionalProperties": False,
    }

    def check(self, config):
        import jsonschema

        from workflows.definition import STEP_SCHEMA, sequence_errors

        validator = jsonschema.Draft202012Validator(STEP_SCHEMA)
        problems = [
            f"steps/{index}: {error.message}"
            for index, step in enumerate(config["steps"])
            for error in validator.iter_errors(step)
        ]
        return problems or sequence_errors(config["steps"], where="steps")

    def sequences(self, config):
        return [config["steps"]]

    def run(self, resolved, ctx):
        items = resolved["items"]
        if isinstance(items, dict):
            items = [{"key": k, "value": v} for k, v in items.items()]
        if not isinstance(items, list):
            raise StepError(f"items must be a list, got {type(items).__name__}")
        limit = resolved.get("max_iterations", DEFAULT_MAX_ITERATIONS)
        if len(items) > limit:
            raise StepError(f"{len(items)} items exceed max_iterations ({limit})")
        outputs = []
        for index, item in enumerate(items):
            names = {**ctx.data, "item": item, "index": index, "steps": dict(ctx.data["steps"])}
            outputs.append(
                ctx.engine.run_sequence(resolved["steps"], names, prefix=f"{ctx.path}[{index}].")
            )
        return outputs
