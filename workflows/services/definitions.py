"""Workflow definitions as services: create a workflow with its steps (validated,
saved as version 1; code steps only for users who may add them), and run one by
hand (the admin's "Run with a JSON input").
"""

from django.core.exceptions import ValidationError
from django.db import transaction

from workflows.definition import (
    code_step_guard,
    definition_errors,
    definition_from_workflow,
    workflow_version_save,
)
from workflows.errors import WorkflowDisabled
from workflows.models import Execution, Step, Workflow
from workflows.services import intake


def workflow_create(
    *,
    name: str,
    steps: list[tuple[str, str, dict] | dict],
    description: str = "",
    variables: dict | None = None,
    timeout_seconds: int | None = None,
    user=None,
) -> Workflow:
    """A workflow with its steps in order, each a (key, type, config) tuple or a
    step of the definition format (workflows/definition.py); all validated, and
    saved as version 1. Code steps (at any depth) only for a ``user`` who may add
    them (``code_step_guard``; None: a trusted caller)."""
    with transaction.atomic():
        workflow = Workflow.objects.create(
            name=name,
            description=description,
            variables=variables or {},
            timeout_seconds=timeout_seconds,
        )
        for position, spec in enumerate(steps, start=1):
            if not isinstance(spec, dict):
                spec = dict(zip(("key", "type", "config"), spec, strict=True))
            step = Step(workflow=workflow, position=position, **spec)
            step.full_clean()
            step.save()
        definition = definition_from_workflow(workflow)
        code_step_guard(steps=definition["steps"], user=user)
        problems = definition_errors(definition)
        if problems:
            raise ValidationError(problems)
        workflow_version_save(workflow=workflow)
    return workflow


def workflow_run(*, workflow: Workflow, body: dict) -> Execution:
    """Run a workflow by hand (the admin's "Run with a JSON input" action): a
    queued run whose trigger input is what a POST with ``body`` gives, marked by
    its user-agent. A disabled workflow refuses, as its APIs do."""
    if not workflow.enabled:
        raise WorkflowDisabled(f"Workflow {workflow.name!r} is disabled")
    trigger_input = {
        "method": "POST",
        "body": body,
        "query": {},
        "headers": {"user-agent": "iolinker admin"},
    }
    return intake.execution_queue_one(Execution(workflow=workflow, input=trigger_input))
