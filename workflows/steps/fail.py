"""The fail step: stop the run, failed, with a message."""

from workflows.steps.base import StepError, StepType, register


@register
class Fail(StepType):
    """Stop the run as failed with a message (whatever the step's on-error policy);
    ``data`` (optional) is recorded as the step's output."""

    name = "fail"
    label = "Fail (stop the run with a message)"
    pure = True
    fatal = True
    schema = {
        "type": "object",
        "properties": {"message": {"type": "string", "minLength": 1}, "data": {}},
        "required": ["message"],
        "additionalProperties": False,
    }

    def run(self, resolved, ctx):
        raise StepError(str(resolved["message"]), output=resolved.get("data"))
