"""A workflow's definition: the format versions store and export/import carry.

    {"variables": {...}, "timeout_seconds": 60 | null,
     "steps": [{"key": "fetch", "type": "http", "config": {...},
                "next": "", "retries": 0, "retry_interval": 1.0, "retry_backoff": 2.0,
                "timeout": null, "on_error": "fail", "error_next": ""}, ...]}

Only ``key``, ``type`` and ``config`` are required in a step; the rest take the
defaults above. Steps run in list order. ``next`` (after the step succeeds),
``error_next`` (``on_error: "branch"``) and a condition's targets name a *later*
step of the same list, or ``"end"``: jumps only go forward, so every run ends.
Steps of a loop are a list of the same shape inside its config.

It also owns the one rule about ``code`` steps (they run Python on the workers):
``code_step_guard`` walks every nested sequence of a definition, and every path
that saves one (admin page, import page and command, clone, ``workflow_create``)
calls it.
"""

from dataclasses import dataclass

import jsonschema

from workflows import steps as step_library
from workflows.models import SPEC_OPTIONS

END = "end"
KEY_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"
ON_ERROR = ("fail", "continue", "branch")

STEP_SCHEMA = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "pattern": KEY_PATTERN},
        "type": {"type": "string"},
        "config": {"type": "object"},
        "next": {"type": "string"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "retry_interval": {"type": "number", "minimum": 0, "maximum": 300},
        "retry_backoff": {"type": "number", "minimum": 1, "maximum": 10},
        "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 3600},
        "on_error": {"enum": list(ON_ERROR)},
        "error_next": {"type": "string"},
    },
    "required": ["key", "type"],
    "additionalProperties": False,
}
DEFINITION_SCHEMA = {
    "type": "object",
    "properties": {
        "variables": {"type": "object"},
        "timeout_seconds": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": 30 * 24 * 3600,
        },
        "steps": {"type": "array", "items": STEP_SCHEMA, "maxItems": 500},
    },
    "required": ["steps"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class StepSpec:
    key: str
    type: str
    config: dict
    next: str = ""
    retries: int = 0
    retry_interval: float = 1.0
    retry_backoff: float = 2.0
    timeout: float | None = None
    on_error: str = "fail"
    error_next: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "StepSpec":
        options = {name: data[name] for name in SPEC_OPTIONS if data.get(name) is not None}
        return cls(key=data["key"], type=data["type"], config=data.get("config", {}), **options)


def specs(step_dicts: list[dict]) -> list[StepSpec]:
    return [StepSpec.from_dict(d) for d in step_dicts]


def definition_from_workflow(workflow) -> dict:
    """The current definition of a saved workflow (its settings and step rows)."""
    return {
        "variables": workflow.variables or {},
        "timeout_seconds": workflow.timeout_seconds,
        "steps": [step.as_spec() for step in workflow.steps.order_by("position", "id")],
    }


def definition_errors(definition) -> list[str]:
    """Everything wrong with a definition, each message naming where."""
    validator = jsonschema.Draft202012Validator(DEFINITION_SCHEMA)
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or 'definition'}: {e.message}"
        for e in validator.iter_errors(definition)
    ]
    if problems:
        return problems
    return sequence_errors(definition["steps"], where="steps")


def sequence_errors(step_dicts: list[dict], *, where: str) -> list[str]:
    """Keys unique, types known, configs valid, jumps forward to a step of this list."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, step in enumerate(step_dicts):
        if step["key"] in seen:
            problems.append(f"{where}/{index}/key: {step['key']!r} is used twice")
        seen.setdefault(step["key"], index)
    for index, step in enumerate(step_dicts):
        at = f"{where}/{index} ({step['key']})"
        step_type = step_library.REGISTRY.get(step["type"])
        if step_type is None:
            problems.append(f"{at}: unknown step type {step['type']!r}")
            continue
        config = step.get("config", {})
        problems += [f"{at}/config/{p}" for p in step_type.validate(config)]
        targets = [("next", step.get("next", "")), ("error_next", step.get("error_next", ""))]
        if step.get("on_error") == "branch" and not step.get("error_next"):
            problems.append(f"{at}: on_error 'branch' needs error_next")
        if not step_type.validate(config):  # (a loop's check validates its body)
            targets += [("config", t) for t in step_type.targets(config)]
        for field, target in targets:
            problems += _target_errors(at, field, target, index, seen)
    return problems


def _target_errors(at: str, field: str, target: str, index: int, seen: dict) -> list[str]:
    if not target or target == END:
        return []
    if target not in seen:
        return [f"{at}/{field}: no step {target!r} in this list (or 'end')"]
    if seen[target] <= index:
        return [f"{at}/{field}: {target!r} is not after this step; jumps only go forward"]
    return []


# --- Who may add or change code steps -----------------------------------------

# Adding or changing a code step needs this permission on top of changing the
# workflow (superusers have it).
CODE_STEP_PERMISSION = "workflows.change_code_step"
CODE_STEP_REFUSED = (
    "Adding or changing a code step (%s) needs the permission "
    "“Can add or change code steps”: ask an administrator."
)


def _steps_by_path(step_dicts, prefix: str = "") -> dict[str, tuple]:
    """Every step of a definition, nested ones included (a loop's body, any step
    type's ``sequences``), by its path of keys ("each.calc"): (type, config).
    Tolerates unvalidated input (it only reads what is there)."""
    found: dict[str, tuple] = {}
    if not isinstance(step_dicts, list | tuple):
        return found
    for step in step_dicts:
        if not isinstance(step, dict):
            continue
        path = f"{prefix}{step.get('key')}"
        config = step.get("config")
        found[path] = (step.get("type"), config)
        step_type = step_library.REGISTRY.get(step.get("type"))
        if step_type is None or not isinstance(config, dict):
            continue
        try:
            nested = step_type.sequences(config)
        except (KeyError, TypeError, AttributeError):
            continue
        for sequence in nested:
            found.update(_steps_by_path(sequence, prefix=f"{path}."))
    return found


def code_steps_changed(*, steps, before=()) -> list[str]:
    """Paths of the code steps ``steps`` adds or changes against ``before`` (the
    steps as stored, or nothing for a new workflow), at any depth: a step that is
    or was ``code`` whose type or config differs. Deleting one is not a change."""
    old, new = _steps_by_path(list(before)), _steps_by_path(steps)
    return [
        path
        for path, (kind, config) in new.items()
        if "code" in (kind, old.get(path, (None,))[0]) and old.get(path) != (kind, config)
    ]


def code_step_guard(*, steps, before=(), user) -> None:
    """Raise CodeStepRefused when ``user`` may not make these code-step changes.
    ``user=None`` is a trusted caller without a user (a management command run
    by an operator, code): every admin path passes the request's user."""
    if user is None or user.has_perm(CODE_STEP_PERMISSION):
        return
    changed = code_steps_changed(steps=steps, before=before)
    if changed:
        raise CodeStepRefused(CODE_STEP_REFUSED % ", ".join(changed))


# --- Versions, export, import, clone -----------------------------------------

EXPORT_FORMAT = "iolinker.workflow"
EXPORT_FORMAT_VERSION = 1


def workflow_version_save(*, workflow):
    """Snapshot the workflow's definition as a new version unless the latest one
    already holds it; returns the current version. Call after every save."""
    from django.db import IntegrityError, transaction

    from workflows.models import WorkflowVersion

    definition = definition_from_workflow(workflow)
    for _ in range(3):
        latest = workflow.versions.order_by("-number").first()
        if latest is not None and latest.definition == definition:
            return latest
        try:
            with transaction.atomic():
                return WorkflowVersion.objects.create(
                    workflow=workflow,
                    number=(latest.number + 1) if latest else 1,
                    definition=definition,
                )
        except IntegrityError:
            continue  # another save made that number first: look again
    raise RuntimeError(f"could not save a version of workflow {workflow.pk}")


def workflow_export(*, workflow) -> dict:
    """The workflow as a JSON-ready document (the format of workflow_import)."""
    return {
        "format": EXPORT_FORMAT,
        "formatVersion": EXPORT_FORMAT_VERSION,
        "name": workflow.name,
        "description": workflow.description,
        "enabled": workflow.enabled,
        **definition_from_workflow(workflow),
    }


class DefinitionError(ValueError):
    """An export document that cannot be imported; the message says why."""


class CodeStepRefused(DefinitionError):
    """A user without CODE_STEP_PERMISSION tried to add or change code steps."""


def workflow_import(*, document: dict, name: str | None = None, replace: bool = False, user=None):
    """Create a workflow from an export document (or, with ``replace``, give the
    workflow of that name these settings and steps: a new version). Everything is
    validated first; nothing is written when anything is wrong. ``user`` (the
    admin's request user; None for a trusted operator) must hold the code-step
    permission for the code steps this adds or changes (code_step_guard)."""
    from django.db import transaction

    from workflows.models import Step, Workflow

    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise DefinitionError(f"not an {EXPORT_FORMAT} document (its 'format' must say so)")
    if document.get("formatVersion") != EXPORT_FORMAT_VERSION:
        raise DefinitionError(f"unsupported formatVersion {document.get('formatVersion')!r}")
    name = name or document.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise DefinitionError("the workflow needs a name of 1 to 200 characters")
    definition = {
        k: document[k] for k in ("variables", "timeout_seconds", "steps") if k in document
    }
    problems = definition_errors(definition)
    if problems:
        raise DefinitionError("; ".join(problems))
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(name=name).first()
        if workflow is not None and not replace:
            raise DefinitionError(
                f"a workflow named {name!r} exists (replace it, or give a new name)"
            )
        before = definition_from_workflow(workflow)["steps"] if workflow is not None else []
        code_step_guard(steps=definition["steps"], before=before, user=user)
        if workflow is None:
            workflow = Workflow(name=name)
        workflow.description = str(document.get("description", ""))
        workflow.enabled = bool(document.get("enabled", True))
        workflow.variables = definition.get("variables") or {}
        workflow.timeout_seconds = definition.get("timeout_seconds")
        workflow.save()
        workflow.steps.all().delete()
        Step.objects.bulk_create(
            Step(workflow=workflow, position=position, **_step_fields(step))
            for position, step in enumerate(definition["steps"], start=1)
        )
        workflow_version_save(workflow=workflow)
    return workflow


def workflows_import(*, documents: list, name: str | None = None, replace: bool = False, user=None):
    """Import several export documents (what Export writes for a selection): all
    or none, each as workflow_import does; returns the workflows."""
    from django.db import transaction

    with transaction.atomic():
        return [
            workflow_import(document=document, name=name, replace=replace, user=user)
            for document in documents
        ]


def _step_fields(step: dict) -> dict:
    fields = {"key": step["key"], "type": step["type"], "config": step.get("config", {})}
    for name in SPEC_OPTIONS:
        if step.get(name) is not None:
            fields[name] = step[name]
    return fields


def workflow_clone(*, workflow, name: str, user=None):
    """A copy of the workflow (its current definition) under a new name, disabled
    APIs not included: nothing triggers the copy until an API is bound to it.
    Copies code steps only for a ``user`` who may add them (None: trusted)."""
    return workflow_import(document=workflow_export(workflow=workflow), name=name, user=user)
