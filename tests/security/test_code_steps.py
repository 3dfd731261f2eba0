"""Isolation: adding, changing or importing code steps needs its own admin
permission; staff who may only view see runs but cannot change workflows."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import make_workflow
from tests.security.conftest import EDITOR, existing_step_form, staff_client
from tests.test_admin_engine import workflow_form
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


# Isolation: code steps need their own admin permission ------------------------------

CODE = {"key": "calc", "type": "code", "config": {"code": "return {'n': 1}"}}
TRANSFORM = {"key": "shape", "type": "transform", "config": {"value": 1}}


@pytest.fixture
def editor(client):
    """A staff user who may edit workflows but not code steps."""
    return staff_client(client, *EDITOR)


@pytest.fixture
def coder(client):
    return staff_client(client, *EDITOR, "change_code_step")


def test_an_editor_without_the_permission_cannot_add_a_code_step(editor):
    response = editor.post("/admin/workflows/workflow/add/", workflow_form("wf", [CODE]))
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="wf").exists()


def test_an_editor_without_the_permission_cannot_give_a_code_step_the_network(editor):
    workflow = make_workflow("wf", [("calc", "code", {"code": "return 1"})])
    change = {"config": '{"code": "return 1", "network": true}'}
    response = editor.post(
        f"/admin/workflows/workflow/{workflow.pk}/change/",
        existing_step_form(workflow, calc=change),
    )
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert workflow.steps.get().config == {"code": "return 1"}


def test_an_editor_without_the_permission_cannot_hide_a_code_step_in_a_loop(editor):
    loop = {"key": "each", "type": "loop", "config": {"items": "{{ body.items }}", "steps": [CODE]}}
    response = editor.post("/admin/workflows/workflow/add/", workflow_form("wf", [loop]))
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="wf").exists()
    document = {"format": "iolinker.workflow", "formatVersion": 1, "name": "imp", "steps": [loop]}
    upload = SimpleUploadedFile("wf.json", json.dumps(document).encode())
    response = editor.post("/admin/workflows/workflow/import/", {"file": upload})
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="imp").exists()


def test_an_editor_without_the_permission_may_add_other_steps(editor):
    response = editor.post("/admin/workflows/workflow/add/", workflow_form("wf", [TRANSFORM]))
    assert response.status_code == 302
    assert Workflow.objects.get(name="wf").steps.get().type == "transform"


def test_an_editor_without_the_permission_cannot_change_a_code_step(editor):
    workflow = make_workflow("wf", [("calc", "code", {"code": "return 1"})])
    page = f"/admin/workflows/workflow/{workflow.pk}/change/"
    # Saving it untouched (other fields may change) is allowed ...
    data = existing_step_form(workflow)
    data["description"] = "edited"
    assert editor.post(page, data).status_code == 302
    # ... changing its code, or its type, is not.
    for change in ({"config": '{"code": "return 2"}'}, {"type": "transform"}):
        response = editor.post(page, existing_step_form(workflow, calc=change))
        assert response.status_code == 200
        assert "Can add or change code steps" in response.content.decode()
    assert workflow.steps.get().config == {"code": "return 1"}


def test_the_permission_allows_code_steps(coder):
    response = coder.post("/admin/workflows/workflow/add/", workflow_form("wf", [CODE]))
    assert response.status_code == 302
    assert Workflow.objects.get(name="wf").steps.get().type == "code"


def test_an_editor_without_the_permission_cannot_import_code_steps(editor):
    document = {"format": "iolinker.workflow", "formatVersion": 1, "name": "imp", "steps": [CODE]}
    upload = SimpleUploadedFile("wf.json", json.dumps(document).encode())
    response = editor.post("/admin/workflows/workflow/import/", {"file": upload})
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="imp").exists()


def test_a_viewer_sees_runs_but_cannot_change_workflows(client, open_api):
    viewer = staff_client(client, "view_execution", "view_steprun", "view_workflow")
    assert viewer.get("/admin/workflows/execution/").status_code == 200
    page = f"/admin/workflows/workflow/{open_api.workflow.pk}/change/"
    assert viewer.get(page).status_code == 200  # read-only view
    data = existing_step_form(open_api.workflow)
    data["description"] = "edited"
    assert viewer.post(page, data).status_code == 403
    assert viewer.get("/admin/triggers/apidefinition/").status_code == 403
