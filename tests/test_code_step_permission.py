"""A code step runs Python on the workers: adding or changing one needs
`workflows.change_code_step`, at any depth of a definition (a loop's body, a
loop in a loop), on every path that saves a definition: the workflow page, the
import page, the import command, the clone action and `workflow_create`."""

import json
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from tests.conftest import make_workflow
from tests.security.conftest import EDITOR, existing_step_form
from tests.test_admin_engine import workflow_form
from workflows.definition import CodeStepRefused, code_steps_changed, workflow_export
from workflows.models import Workflow
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db

REFUSED = "Can add or change code steps"
CODE = {"key": "calc", "type": "code", "config": {"code": "return {'n': 1}"}}


def loop(key: str, *body: dict) -> dict:
    return {
        "key": key,
        "type": "loop",
        "config": {"items": "{{ body.items }}", "steps": list(body)},
    }


IN_A_LOOP = loop("each", CODE)
IN_A_LOOP_IN_A_LOOP = loop(
    "outer", {"key": "shape", "type": "transform", "config": {"value": 1}}, loop("inner", CODE)
)
NESTED = {"code in a loop": IN_A_LOOP, "code in a loop in a loop": IN_A_LOOP_IN_A_LOOP}


def make_user(name: str, *codenames: str) -> User:
    user = User.objects.create_user(name, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def editor_user():
    return make_user("editor", *EDITOR, "add_workflow")


@pytest.fixture
def editor(client, editor_user):
    client.force_login(editor_user)
    return client


@pytest.fixture
def coder(client):
    client.force_login(make_user("coder", *EDITOR, "change_code_step"))
    return client


def document(name: str, *steps: dict) -> dict:
    return {"format": "iolinker.workflow", "formatVersion": 1, "name": name, "steps": list(steps)}


def upload(doc) -> SimpleUploadedFile:
    return SimpleUploadedFile("wf.json", json.dumps(doc).encode())


# The rule itself -----------------------------------------------------------------------


def test_nested_code_steps_are_named_by_their_path():
    assert code_steps_changed(steps=[IN_A_LOOP]) == ["each.calc"]
    assert code_steps_changed(steps=[IN_A_LOOP_IN_A_LOOP]) == ["outer.inner.calc"]
    # Unchanged against what is stored: nothing; changed code or type: named.
    assert code_steps_changed(steps=[IN_A_LOOP], before=[IN_A_LOOP]) == []
    retyped = loop("each", {**CODE, "type": "transform", "config": {"value": 1}})
    assert code_steps_changed(steps=[retyped], before=[IN_A_LOOP]) == ["each.calc"]
    # Deleting one is no change; malformed input is read, not trusted.
    assert (
        code_steps_changed(steps=[loop("each", {"key": "x", "type": "fail"})], before=[IN_A_LOOP])
        == []
    )
    assert code_steps_changed(steps=[{"key": "l", "type": "loop", "config": {"steps": "no"}}]) == []


# The workflow page ----------------------------------------------------------------------


@pytest.mark.parametrize("step", NESTED.values(), ids=NESTED.keys())
def test_an_editor_cannot_add_a_nested_code_step_on_the_workflow_page(editor, step):
    response = editor.post("/admin/workflows/workflow/add/", workflow_form("wf", [step]))
    assert response.status_code == 200
    assert REFUSED in response.content.decode()
    assert not Workflow.objects.filter(name="wf").exists()


def test_an_editor_cannot_change_a_nested_code_step_but_may_save_it_untouched(editor):
    workflow = make_workflow("wf", [IN_A_LOOP_IN_A_LOOP])
    page = f"/admin/workflows/workflow/{workflow.pk}/change/"
    data = existing_step_form(workflow)
    data["description"] = "edited"
    assert editor.post(page, data).status_code == 302
    changed = json.loads(json.dumps(IN_A_LOOP_IN_A_LOOP["config"]))
    changed["steps"][1]["config"]["steps"][0]["config"]["code"] = "import os\nreturn 2"
    response = editor.post(
        page, existing_step_form(workflow, outer={"config": json.dumps(changed)})
    )
    assert response.status_code == 200
    assert REFUSED in response.content.decode()
    assert "outer.inner.calc" in response.content.decode()
    assert workflow.steps.get().config == IN_A_LOOP_IN_A_LOOP["config"]


def test_a_coder_may_add_a_nested_code_step_on_the_workflow_page(coder):
    response = coder.post("/admin/workflows/workflow/add/", workflow_form("wf", [IN_A_LOOP]))
    assert response.status_code == 302
    assert Workflow.objects.get(name="wf").steps.get().config == IN_A_LOOP["config"]


# The import page and command ------------------------------------------------------------


@pytest.mark.parametrize("step", NESTED.values(), ids=NESTED.keys())
def test_an_editor_cannot_import_a_nested_code_step(editor, step):
    response = editor.post(
        "/admin/workflows/workflow/import/", {"file": upload(document("imp", step))}
    )
    assert response.status_code == 200
    assert REFUSED in response.content.decode()
    assert not Workflow.objects.filter(name="imp").exists()


def test_an_import_of_several_documents_writes_none_when_one_is_refused(editor):
    docs = [
        document("plain", {"key": "x", "type": "output", "config": {"value": 1}}),
        document("sneaky", IN_A_LOOP),
    ]
    response = editor.post("/admin/workflows/workflow/import/", {"file": upload(docs)})
    assert REFUSED in response.content.decode()
    assert not Workflow.objects.filter(name__in=["plain", "sneaky"]).exists()


def test_the_import_command_applies_the_named_users_permissions(tmp_path, editor_user):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(document("imp", IN_A_LOOP_IN_A_LOOP)))
    with pytest.raises(CommandError, match=REFUSED):
        call_command("import_workflow", str(path), "--user", "editor", stdout=StringIO())
    assert not Workflow.objects.filter(name="imp").exists()
    with pytest.raises(CommandError, match="No active user"):
        call_command("import_workflow", str(path), "--user", "nobody", stdout=StringIO())
    # Without --user the operator at the shell is trusted (they could run Python anyway).
    call_command("import_workflow", str(path), stdout=StringIO())
    assert Workflow.objects.filter(name="imp").exists()


# Clone and the service ------------------------------------------------------------------


def test_an_editor_cannot_clone_a_workflow_with_a_nested_code_step(editor):
    plain = make_workflow("plain", [{"key": "x", "type": "output", "config": {"value": 1}}])
    sneaky = make_workflow("sneaky", [IN_A_LOOP_IN_A_LOOP])
    response = editor.post(
        "/admin/workflows/workflow/",
        {"action": "clone_selected", "_selected_action": [plain.pk, sneaky.pk]},
        follow=True,
    )
    assert REFUSED in response.content.decode()
    assert Workflow.objects.count() == 2  # all or none: the plain one is not cloned either


def test_a_coder_may_clone_a_workflow_with_a_nested_code_step(coder):
    sneaky = make_workflow("sneaky", [IN_A_LOOP])
    coder.post(
        "/admin/workflows/workflow/", {"action": "clone_selected", "_selected_action": [sneaky.pk]}
    )
    copy = Workflow.objects.get(name="sneaky (copy)")
    assert workflow_export(workflow=copy)["steps"] == [IN_A_LOOP]


def test_workflow_create_refuses_a_nested_code_step_for_a_user_without_the_permission(editor_user):
    with pytest.raises(CodeStepRefused, match="each.calc"):
        workflow_create(name="svc", steps=[IN_A_LOOP], user=editor_user)
    assert not Workflow.objects.filter(name="svc").exists()
    coder = make_user("coder", "change_code_step")
    assert workflow_create(name="svc", steps=[IN_A_LOOP], user=coder).steps.count() == 1
