from dataclasses import dataclass, field
from typing import ClassVar

import jsonschema

from workflows import templating

REGISTRY: dict[str, "StepType"] = {}


class StepError(Exception):
    """A step failed; the message is shown on the step run and the execution.

    ``output`` is what the step produced before failing (e.g. an HTTP error
    response), recorded on its step run.
    """

    def __init__(self, message: str, *, output=None):
        super().__init__(message)
        self.output = output


@dataclass
class StepContext:
    """What a running step can see: expression names and a place for its logs."""

    data: dict  # input, body, query, headers, method, steps
    execution_uid: int
    step_key: str
    logs: list[str] = field(default_factory=list)
    step_id: int | None = None  # the Step row (None for a step not saved)

    def render(self, value):
        try:
            return templating.render(value, self.data)
        except templating.ExpressionError as exc:
            raise StepError(str(exc)) from exc


class StepType:
    name: ClassVar[str]
    label: ClassVar[str]
    # JSON Schema of the step's config, checked when a workflow is saved.
    schema: ClassVar[dict] = {"type": "object"}
    # Config keys whose values are not templates (e.g. Python source).
    literal_keys: ClassVar[frozenset[str]] = frozenset()
    # The output of this step becomes the workflow's output.
    sets_output: ClassVar[bool] = False

    def validate(self, config) -> list[str]:
        validator = jsonschema.Draft202012Validator(self.schema)
        errors = [
            f"{'/'.join(map(str, e.absolute_path)) or 'config'}: {e.message}"
            for e in validator.iter_errors(config)
        ]
        if not errors and isinstance(config, dict):
            templated = {k: v for k, v in config.items() if k not in self.literal_keys}
            errors += templating.check(templated)
            errors += self.check(config)
        return errors

    def check(self, config: dict) -> list[str]:
        """Extra validation beyond the schema (override when needed)."""
        return []

    def resolve_input(self, config: dict, ctx: StepContext):
        """The step's input as recorded on its step run: the config with templates rendered."""
        return {k: (v if k in self.literal_keys else ctx.render(v)) for k, v in config.items()}

    def run(self, resolved: dict, ctx: StepContext):
        raise NotImplementedError


def register(cls: type[StepType]) -> type[StepType]:
    if cls.name in REGISTRY:
        raise RuntimeError(f"Step type {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls()
    return cls
