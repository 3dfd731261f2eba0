"""The management API's workflows and runs: import / export / list, runs by
filter and cursor, a run's detail, re-run and cancel, and one flow from an
imported workflow to a run read back. (Access and APIs: test_manage_apis.py.)"""

import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import execution_start, make_api, make_workflow
from tests.manage.conftest import ManageClient, body, error, grant
from tests.support.queue import drain_queue
from tests.test_unreadable_rows import poison
from triggers.manage.auth import manage_token_create
from triggers.models import AuthMode
from workflows.definition import workflow_export
from workflows.models import Execution, ExecutionStatus, Workflow

pytestmark = pytest.mark.django_db

ECHO = [("result", "output", {"value": {"got": "{{ body }}"}})]
CODE = [("calc", "code", {"code": "return 6 * 7"})]


def document(name: str, steps=ECHO) -> dict:
    """An export document, as export_workflow writes it."""
    out = io.StringIO()
    workflow = make_workflow(name, steps)
    call_command("export_workflow", name, stdout=out)
    workflow.delete()
    return json.loads(out.getvalue())


def run(workflow: Workflow, **fields) -> Execution:
    execution = execution_start(workflow=workflow, trigger_input={"body": {}})
    if fields:
        Execution.objects.filter(uid=execution.uid).update(**fields)
    return Execution.objects.get(uid=execution.uid)


def no_count(queries) -> bool:
    """No query counted the rows of a list (a per-row count in a subquery is fine)."""
    return not [
        q for q in queries.captured_queries if "COUNT(*)" in q["sql"] or "__count" in q["sql"]
    ]


# --- Workflows ----------------------------------------------------------------------


def test_an_exported_file_imports_as_it_is(operator):
    response = operator.post("workflows/import/", document("hello"))
    assert response.status_code == 201, response.content
    (imported,) = body(response)["imported"]
    workflow = Workflow.objects.get(name="hello")
    assert imported["id"] == workflow.pk and imported["version"] == 1
    assert imported["stepCount"] == 1 and imported["enabled"] is True


def test_export_answers_the_document_of_the_command(operator):
    workflow = make_workflow("hello", ECHO)
    response = operator.get(f"workflows/{workflow.pk}/export/")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert json.loads(response.content) == workflow_export(workflow=workflow)  # not enveloped
    again = operator.post("workflows/import/?name=copy", json.loads(response.content))
    assert again.status_code == 201
    assert (
        workflow_export(workflow=Workflow.objects.get(name="copy"))["steps"]
        == (workflow_export(workflow=workflow)["steps"])
    )


def test_an_import_of_several_documents_is_all_or_none(operator):
    broken = {**document("b"), "steps": [{"key": "x", "type": "nope"}]}
    response = operator.post("workflows/import/", [document("a"), broken])
    assert response.status_code == 400
    assert "unknown step type 'nope'" in error(response)["message"]
    assert not Workflow.objects.exists()
    both = operator.post("workflows/import/", [document("a"), document("b")])
    assert [w["name"] for w in body(both)["imported"]] == ["a", "b"]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({}, "not an iolinker.workflow document"),
        ([], "no workflow document"),
        ({"format": "iolinker.workflow", "formatVersion": 9}, "unsupported formatVersion"),
    ],
)
def test_an_import_that_is_not_a_document_is_400(operator, payload, problem):
    response = operator.post("workflows/import/", payload)
    assert response.status_code == 400 and problem in error(response)["message"]


def test_replacing_a_workflow_needs_replace_and_makes_a_version(operator):
    make_workflow("hello", ECHO)
    other = [("result", "output", {"value": 2})]
    changed = {**document("other", other), "name": "hello", "description": "v2"}
    refused = operator.post("workflows/import/", changed)
    assert refused.status_code == 400 and "exists" in error(refused)["message"]
    replaced = operator.post("workflows/import/?replace=true", changed)
    assert body(replaced)["imported"][0]["version"] == 2
    assert Workflow.objects.get(name="hello").description == "v2"


def test_staff_without_the_code_step_permission_cannot_import_a_code_step(editor, operator):
    code = document("calc", CODE)
    refused = editor.post("workflows/import/", code)
    assert refused.status_code == 403
    assert error(refused)["code"] == "requestError.forbidden"
    assert "code step" in error(refused)["message"] and not Workflow.objects.exists()
    assert editor.post("workflows/import/", document("plain")).status_code == 201
    assert operator.post("workflows/import/", code).status_code == 201  # a superuser may


def test_replacing_needs_the_change_permission(db):
    make_workflow("hello", ECHO)
    user = User.objects.create_user("adder", is_staff=True)
    adder = ManageClient(manage_token_create(user=grant(user, "workflows.add_workflow"), days=0))
    refused = adder.post("workflows/import/?replace=1", {**document("x"), "name": "hello"})
    assert refused.status_code == 403 and "change permission" in error(refused)["message"]
    assert adder.post("workflows/import/", document("new")).status_code == 201


def test_workflows_are_listed_by_cursor_with_their_counts(operator):
    for name in ("a", "b", "c"):
        make_workflow(name, ECHO)
    with CaptureQueriesContext(connection) as queries:
        first = body(operator.get("workflows/?limit=2"))
    assert no_count(queries) and len(queries) <= 4
    assert [w["name"] for w in first["results"]] == ["a", "b"]
    assert [w["name"] for w in body(operator.get(first["next"]))["results"]] == ["c"]
    (only,) = body(operator.get("workflows/?name=b"))["results"]
    assert only["stepCount"] == 1 and only["version"] == 1
    assert body(operator.get(f"workflows/{only['id']}/"))["name"] == "b"


# --- Runs ---------------------------------------------------------------------------


def test_runs_page_newest_first_by_cursor_without_a_count_and_stay_stable(operator):
    workflow = make_workflow("w", ECHO)
    uids = [run(workflow).uid for _ in range(5)]
    with CaptureQueriesContext(connection) as queries:
        first = body(operator.get("executions/?limit=2"))
    assert no_count(queries)
    assert [r["uid"] for r in first["results"]] == [str(u) for u in uids[::-1][:2]]
    newer = run(workflow)  # written between two pages: shifts nothing
    with CaptureQueriesContext(connection) as queries:
        second = body(operator.get(first["next"]))
    assert no_count(queries)
    assert [r["uid"] for r in second["results"]] == [str(u) for u in uids[::-1][2:4]]
    third = body(operator.get(second["next"]))
    assert [r["uid"] for r in third["results"]] == [str(uids[0])] and third["next"] is None
    back = body(operator.get(second["previous"]))
    assert [r["uid"] for r in back["results"]] == [str(u) for u in uids[::-1][:2]]
    assert body(operator.get("executions/"))["results"][0]["uid"] == str(newer.uid)


def test_a_runs_page_is_a_bounded_number_of_queries(operator):
    workflow = make_workflow("w", ECHO)
    api = make_api(workflow)
    for _ in range(30):
        execution_start(workflow=workflow, trigger_input={"body": {}}, api=api)
    with CaptureQueriesContext(connection) as queries:
        page = body(operator.get("executions/?limit=25"))
    assert len(page["results"]) == 25 and page["results"][0]["api"] == "shop/order"
    assert len(queries) <= 4, [q["sql"] for q in queries.captured_queries]


def test_runs_are_filtered_by_status_api_workflow_and_time(operator):
    one, two = make_workflow("one", ECHO), make_workflow("two", ECHO)
    api = make_api(one)
    old = run(one, status=ExecutionStatus.FAILED)
    by_api = execution_start(workflow=one, trigger_input={"body": {}}, api=api)
    other = run(two, status=ExecutionStatus.SUCCEEDED)

    def uids(query: str) -> list[str]:
        response = operator.get(f"executions/?{query}")
        assert response.status_code == 200, response.content
        return [r["uid"] for r in body(response)["results"]]

    assert uids("status=failed") == [str(old.uid)]
    assert uids("status=failed&status=succeeded") == [str(other.uid), str(old.uid)]
    assert uids(f"api={api.pk}") == [str(by_api.uid)]
    assert uids(f"workflow={two.pk}") == [str(other.uid)]
    assert uids(f"workflow={one.pk}&status=queued") == [str(by_api.uid)]
    later = (timezone.now() + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    earlier = (timezone.now() - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert uids(f"createdAfter={later}") == []
    assert len(uids(f"createdAfter={earlier}")) == 3
    assert len(uids(f"createdBefore={later}")) == 3 and uids(f"createdBefore={earlier}") == []
    assert uids("createdBefore=9999-01-01T00:00:00Z") != []


@pytest.mark.parametrize(
    "query", ["status=nope", "api=x", "workflow=abc", "createdAfter=yesterday"]
)
def test_a_bad_filter_is_400(operator, query):
    response = operator.get(f"executions/?{query}")
    assert response.status_code == 400
    assert error(response)["code"] == "requestError.invalidParams"


def test_a_runs_detail_has_its_step_runs_as_show_execution_prints_it(operator):
    execution = run(make_workflow("w", ECHO))
    drain_queue()
    response = operator.get(f"executions/{execution.uid}/")
    assert response.status_code == 200
    detail = body(response)
    out = io.StringIO()
    call_command("show_execution", str(execution.uid), stdout=out)
    assert detail == json.loads(out.getvalue())
    assert detail["status"] == "succeeded" and [s["key"] for s in detail["steps"]] == ["result"]


@pytest.mark.parametrize("uid", ["1", "9223372036854775808", "99999999999999999999", "x"])
def test_an_unknown_run_is_404(operator, uid):
    for verb in ("get", "post"):
        suffix = "" if verb == "get" else "cancel/"
        response = operator.call(verb, f"executions/{uid}/{suffix}", {} if verb == "post" else None)
        assert response.status_code == 404
        assert error(response)["code"] == "requestError.notFound"


def test_a_run_is_rerun_with_the_same_input(operator):
    execution = run(make_workflow("w", ECHO))
    response = operator.post(f"executions/{execution.uid}/rerun/")
    assert response.status_code == 201
    new = body(response)
    assert new["rerunOf"] == str(execution.uid) and new["status"] == "queued"
    assert Execution.objects.get(uid=int(new["uid"])).input == execution.input


def test_a_run_whose_input_cannot_be_read_is_not_rerun(operator):
    execution = run(make_workflow("w", ECHO))
    poison(execution.uid, "input")  # nested past what the decoder reads back
    response = operator.post(f"executions/{execution.uid}/rerun/")
    assert response.status_code == 409
    assert error(response)["code"] == "requestError.conflict"


def test_cancel_ends_a_queued_run_and_refuses_a_finished_one(operator):
    workflow = make_workflow("w", ECHO)
    queued = run(workflow)
    response = operator.post(f"executions/{queued.uid}/cancel/")
    assert response.status_code == 200 and body(response)["status"] == "cancelled"
    assert body(operator.post(f"executions/{queued.uid}/cancel/"))["status"] == "cancelled"
    done = run(workflow, status=ExecutionStatus.SUCCEEDED, finished_at=timezone.now())
    refused = operator.post(f"executions/{done.uid}/cancel/")
    assert refused.status_code == 409
    assert error(refused) == {
        "code": "requestError.executionFinished",
        "message": "The run already ended succeeded",
    }


def test_viewers_read_runs_but_cannot_rerun_or_cancel(viewer):
    execution = run(make_workflow("w", ECHO))
    assert viewer.get("executions/").status_code == 200
    assert viewer.get(f"executions/{execution.uid}/").status_code == 200
    for action in ("rerun", "cancel"):
        response = viewer.post(f"executions/{execution.uid}/{action}/")
        assert response.status_code == 403
    assert Execution.objects.get().status == ExecutionStatus.QUEUED


# --- One flow, as a CI pipeline would run it ------------------------------------------


def test_import_a_workflow_create_an_api_trigger_it_and_read_the_run(operator):
    imported = body(operator.post("workflows/import/", document("greet")))["imported"][0]
    created = body(
        operator.post(
            "apis/",
            {"module": "ci", "method": "greet", "workflow": imported["id"], "authMode": "token"},
        )
    )
    response = Client().post(
        "/v1/api/ci/greet/async",
        data=json.dumps({"name": "pipeline"}),
        content_type="application/json",
        headers={"token": created["token"]},
    )
    assert response.status_code == 202, response.content
    uid = response.json()["response"]["uid"]
    drain_queue()  # the real queue, run in this process (tests/support/queue.py)
    listed = body(operator.get(f"executions/?api={created['id']}"))["results"]
    assert [r["uid"] for r in listed] == [uid] and listed[0]["status"] == "succeeded"
    detail = body(operator.get(f"executions/{uid}/"))
    assert detail["output"] == {"got": {"name": "pipeline"}}
    assert detail["api"] == "ci/greet" and detail["steps"][0]["status"] == "succeeded"
    assert created["authMode"] == AuthMode.TOKEN
