"""The admin pages of the engine: steps with their options, versions, clone,
export/import, credentials, environment variables, cancel and re-run."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import execution_start, make_workflow
from tests.support.queue import drain_queue
from workflows.definition import workflow_export
from workflows.models import Credential, Execution, ExecutionStatus, Workflow

pytestmark = pytest.mark.django_db


def workflow_form(name: str, steps: list[dict], **extra) -> dict:
    data = {
        "name": name,
        "description": "",
        "enabled": "on",
        "variables": '{"limit": 3}',
        "timeout_seconds": "",
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": "0",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        **extra,
    }
    for i, step in enumerate(steps):
        defaults = {
            "position": i + 1,
            "next": "",
            "on_error": "fail",
            "error_next": "",
            "retries": 0,
            "retry_interval": 1,
            "retry_backoff": 2,
            "timeout": "",
        }
        for field, value in {**defaults, **step}.items():
            data[f"steps-{i}-{field}"] = json.dumps(value) if field == "config" else str(value)
    return data


def test_saving_a_workflow_in_the_admin_makes_a_version_with_the_step_options(admin_client):
    response = admin_client.post(
        "/admin/workflows/workflow/add/",
        workflow_form(
            "admin-made",
            [
                {
                    "key": "call",
                    "type": "transform",
                    "config": {"value": 1},
                    "retries": 2,
                    "next": "out",
                },
                {"key": "skipped", "type": "transform", "config": {"value": 2}},
                {"key": "out", "type": "output", "config": {"value": "{{ vars.limit }}"}},
            ],
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    workflow = Workflow.objects.get(name="admin-made")
    [version] = workflow.versions.all()
    assert version.definition["steps"][0] == {
        "key": "call",
        "type": "transform",
        "config": {"value": 1},
        "next": "out",
        "retries": 2,
    }
    execution = execution_start(workflow=workflow, trigger_input={})
    drain_queue()
    execution.refresh_from_db()
    assert execution.output == 3 and execution.version_id == version.pk
    page = admin_client.get(f"/admin/workflows/workflow/{workflow.pk}/change/").content.decode()
    assert "call → skipped → out" in page


def test_the_admin_refuses_a_jump_backwards_with_a_clear_error(admin_client):
    response = admin_client.post(
        "/admin/workflows/workflow/add/",
        workflow_form(
            "loops-back",
            [
                {"key": "a", "type": "transform", "config": {"value": 1}},
                {"key": "b", "type": "transform", "config": {"value": 1}, "next": "a"},
            ],
        ),
    )
    assert response.status_code == 200
    assert "jumps only go forward" in response.content.decode()
    assert not Workflow.objects.filter(name="loops-back").exists()


def test_clone_and_export_actions(admin_client):
    workflow = make_workflow("orig", [("t", "transform", {"value": 1})])
    admin_client.post(
        "/admin/workflows/workflow/",
        {"action": "clone_selected", "_selected_action": [workflow.pk]},
    )
    clone = Workflow.objects.get(name="orig (copy)")
    assert workflow_export(workflow=clone)["steps"] == workflow_export(workflow=workflow)["steps"]
    response = admin_client.post(
        "/admin/workflows/workflow/",
        {"action": "export_selected", "_selected_action": [workflow.pk]},
    )
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == workflow_export(workflow=workflow)


def test_import_page_creates_a_workflow_from_an_exported_file(admin_client):
    document = workflow_export(workflow=make_workflow("src", [("t", "transform", {"value": 1})]))
    upload = SimpleUploadedFile("wf.json", json.dumps(document).encode(), "application/json")
    response = admin_client.post(
        "/admin/workflows/workflow/import/", {"file": upload, "name": "imported"}
    )
    assert response.status_code == 302
    assert Workflow.objects.get(name="imported").versions.count() == 1
    bad = SimpleUploadedFile("wf.json", b'{"format": "other"}', "application/json")
    page = admin_client.post("/admin/workflows/workflow/import/", {"file": bad})
    assert page.status_code == 200 and "not an iolinker.workflow document" in page.content.decode()


def test_a_credential_key_is_write_only_and_stored_encrypted(admin_client):
    response = admin_client.post(
        "/admin/workflows/credential/add/",
        {
            "name": "openai",
            "kind": "openai",
            "base_url": "https://llm.example/v1",
            "model": "m",
            "secret": "sk-very-secret",
        },
    )
    assert response.status_code == 302
    credential = Credential.objects.get()
    assert credential.secret_encrypted and "sk-very-secret" not in credential.secret_encrypted
    page = admin_client.get(f"/admin/workflows/credential/{credential.pk}/change/")
    assert "sk-very-secret" not in page.content.decode()
    assert "sk-very-secret" not in admin_client.get("/admin/workflows/credential/").content.decode()


def test_cancel_and_rerun_actions_call_the_services(admin_client):
    workflow = make_workflow("acts", [("t", "output", {"value": "{{ body.x }}"})])
    queued = execution_start(workflow=workflow, trigger_input={"body": {"x": 1}})
    admin_client.post(
        "/admin/workflows/execution/",
        {"action": "cancel_selected", "_selected_action": [queued.uid]},
    )
    assert Execution.objects.get(uid=queued.uid).status == ExecutionStatus.CANCELLED
    admin_client.post(
        "/admin/workflows/execution/",
        {"action": "rerun_selected", "_selected_action": [queued.uid]},
    )
    rerun = Execution.objects.get(rerun_of=queued.uid)
    drain_queue()
    rerun.refresh_from_db()
    assert rerun.status == ExecutionStatus.SUCCEEDED and rerun.output == 1
