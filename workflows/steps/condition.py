"""The condition step: branch to another step on the first expression that holds."""

from workflows import templating
from workflows.steps.base import StepType, register

_FALSE_TEXT = {"", "false", "0", "no", "none", "null"}


def truthy(value) -> bool:
    """JSON truthiness; text rendered from a template ("False", "0", "") is false too."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_TEXT
    return bool(value)


@register
class Condition(StepType):
    """Branch: go on with the step of the first case whose ``when`` is true, else
    ``default`` (or, when empty, the following step). Cases are evaluated in
    order and only until one matches. Output: ``{"case": index | null, "next": key}``."""

    name = "condition"
    label = "Condition (branch on expressions)"
    pure = True
    literal_keys = frozenset({"cases"})
    schema = {
        "type": "object",
        "properties": {
            "cases": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50,
                "items": {
                    "type": "object",
                    "properties": {"when": {}, "next": {"type": "string", "minLength": 1}},
                    "required": ["when", "next"],
                    "additionalProperties": False,
                },
            },
            "default": {"type": "string"},
        },
        "required": ["cases"],
        "additionalProperties": False,
    }

    def check(self, config):
        return templating.check([case["when"] for case in config["cases"]])

    def targets(self, config):
        return [case["next"] for case in config["cases"]] + [config.get("default", "")]

    def run(self, resolved, ctx):
        for index, case in enumerate(resolved["cases"]):
            if truthy(ctx.render(case["when"])):
                return {"case": index, "next": case["next"]}
        return {"case": None, "next": resolved.get("default", "")}

    def next_step(self, output):
        return output.get("next", "") if isinstance(output, dict) else ""
