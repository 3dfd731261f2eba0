"""The transform step: build JSON from expressions over the input and earlier steps."""

from workflows.steps.base import StepType, register


@register
class Transform(StepType):
    """Build a JSON value from templates over the trigger input and earlier outputs."""

    name = "transform"
    pure = True
    label = "Transform (build JSON from expressions)"
    schema = {
        "type": "object",
        "properties": {"value": {}},
        "required": ["value"],
        "additionalProperties": False,
    }

    def run(self, resolved, ctx):
        return resolved["value"]
