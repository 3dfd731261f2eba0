"""Versions (runs pin what they ran), export/import round trips and clones."""

import json

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import execution_start
from tests.support.queue import drain_queue
from workflows.definition import (
    DefinitionError,
    workflow_clone,
    workflow_export,
    workflow_import,
    workflow_version_save,
)
from workflows.models import Execution, Step, Workflow
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "greet", "type": "transform", "config": {"value": "hi {{ body.name }}"}, "retries": 2},
    {
        "key": "check",
        "type": "condition",
        "config": {"cases": [{"when": "{{ body.vip }}", "next": "vip"}]},
    },
    {"key": "plain", "type": "output", "config": {"value": "{{ steps.greet }}"}, "next": "end"},
    {"key": "vip", "type": "output", "config": {"value": "{{ steps.greet }}!"}},
]


def make(name="versioned") -> Workflow:
    return workflow_create(
        name=name, steps=STEPS, variables={"x": 1}, timeout_seconds=60, description="d"
    )


def test_saving_a_workflow_makes_a_version_only_when_its_definition_changes():
    workflow = make()
    assert workflow.versions.count() == 1
    assert workflow_version_save(workflow=workflow).number == 1  # nothing changed
    Step.objects.filter(workflow=workflow, key="greet").update(config={"value": "hello"})
    assert workflow_version_save(workflow=workflow).number == 2
    workflow.variables = {"x": 2}
    workflow.save()
    assert workflow_version_save(workflow=workflow).number == 3


def test_a_run_pins_the_version_it_ran_and_keeps_showing_its_steps_after_edits():
    workflow = make()
    first = execution_start(workflow=workflow, trigger_input={"body": {"name": "a", "vip": False}})
    drain_queue()
    Step.objects.filter(workflow=workflow, key="greet").update(
        config={"value": "bye {{ body.name }}"}
    )
    workflow_version_save(workflow=workflow)
    second = execution_start(workflow=workflow, trigger_input={"body": {"name": "a", "vip": True}})
    drain_queue()
    first, second = Execution.objects.get(uid=first.uid), Execution.objects.get(uid=second.uid)
    assert (first.version.number, first.output) == (1, "hi a")
    assert (second.version.number, second.output) == (2, "bye a!")
    assert first.version.definition["steps"][0]["config"] == {"value": "hi {{ body.name }}"}
    assert list(first.step_runs.values_list("key", flat=True)) == ["greet", "check", "plain"]


def test_export_then_import_gives_back_the_same_workflow():
    workflow = make()
    document = workflow_export(workflow=workflow)
    assert document["format"] == "iolinker.workflow" and document["formatVersion"] == 1
    copy = workflow_import(document=json.loads(json.dumps(document)), name="copy")
    again = workflow_export(workflow=copy)
    assert {**again, "name": workflow.name} == document
    assert copy.versions.count() == 1


def test_import_refuses_an_invalid_document_and_writes_nothing():
    document = workflow_export(workflow=make())
    document["steps"][0]["next"] = "greet"  # a jump backwards (to itself)
    with pytest.raises(DefinitionError, match="jumps only go forward"):
        workflow_import(document=document, name="bad")
    with pytest.raises(DefinitionError, match="exists"):
        workflow_import(document=workflow_export(workflow=Workflow.objects.get()))
    with pytest.raises(DefinitionError, match="format"):
        workflow_import(document={"steps": []}, name="x")
    assert Workflow.objects.count() == 1


def test_import_can_replace_a_workflow_as_a_new_version():
    workflow = make()
    document = workflow_export(workflow=workflow)
    document["steps"] = document["steps"][:1]
    workflow_import(document=document, replace=True)
    assert list(workflow.steps.values_list("key", flat=True)) == ["greet"]
    assert workflow.versions.count() == 2


def test_a_clone_has_the_same_definition_under_a_new_name():
    workflow = make()
    clone = workflow_clone(workflow=workflow, name="versioned (copy)")
    original, copied = workflow_export(workflow=workflow), workflow_export(workflow=clone)
    assert {**copied, "name": "versioned"} == original
    assert clone.apis.count() == 0


def test_export_and_import_commands_round_trip(tmp_path, capsys):
    make()
    path = tmp_path / "wf.json"
    call_command("export_workflow", "versioned", "-o", str(path))
    call_command("import_workflow", str(path), "--name", "from-file")
    assert "Imported 'from-file' (version 1)" in capsys.readouterr().out
    exported = json.loads(path.read_text())
    assert (
        workflow_export(workflow=Workflow.objects.get(name="from-file"))["steps"]
        == exported["steps"]
    )
    with pytest.raises(CommandError, match="exists"):
        call_command("import_workflow", str(path))
    with pytest.raises(CommandError, match="No workflow"):
        call_command("export_workflow", "nope")
