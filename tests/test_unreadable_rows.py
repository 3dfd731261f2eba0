"""A run row whose JSON cannot be decoded (nested deeper than Python's decoder
goes: stored before intake capped nesting, or written by hand) fails nobody but
itself: the worker fails that run with a clear error and runs the rest of its
chunk; status, admin pages, show_execution and callbacks show the error instead
of a 500 (security issue 12, item 3).

The rows are written with SQL, past every check of the intake.
"""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.conftest import execution_start
from tests.support.queue import drain_queue
from tests.test_callbacks import Receiver, callback_api, settle  # noqa: F401 (a fixture)
from workflows.models import Execution, ExecutionStatus
from workflows.services import execution_run_batch, queueing

pytestmark = pytest.mark.django_db

JSON = "application/json"
# Python's decoder gives up at 1,000 levels less the caller's stack depth (every
# reader's stack is deeper than ten frames); SQLite's JSON check allows 1,000.
DEEP = '{"body": ' + "[" * 990 + "]" * 990 + "}"


def poison(uid: int, *columns: str) -> None:
    cast = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    sets = ", ".join(f"{column} = {cast}" for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE workflows_execution SET {sets} WHERE uid = %s",  # noqa: S608
            [DEEP] * len(columns) + [uid],
        )


def test_the_worker_fails_an_unreadable_run_alone_and_runs_the_rest_of_its_chunk(
    open_api, monkeypatch
):
    monkeypatch.setattr(queueing.ProcessState, "chunk_size", 32)  # all three in one chunk
    uids = [
        execution_start(workflow=open_api.workflow, trigger_input={"body": {"n": n}}).uid
        for n in range(3)
    ]
    poison(uids[1], "input")
    assert sorted(execution_run_batch(uids=uids)) == sorted(uids)
    runs = {e.uid: e for e in Execution.objects.all()}
    assert [runs[uid].status for uid in uids] == ["succeeded", "failed", "succeeded"]
    assert runs[uids[0]].output["body"] == {"n": 0} and runs[uids[2]].output["body"] == {"n": 2}
    bad = runs[uids[1]]
    assert bad.error == (
        "The run's input cannot be read "
        "(unreadable: the stored JSON is nested too deeply to decode)"
    )
    assert bad.attempts == 1 and bad.finished_at and bad.lease_until is None


def test_status_admin_pages_and_show_execution_survive_an_unreadable_row(
    caller, admin_client, open_api
):
    accepted = [
        caller.post("/v1/api/shop/order/async", data=f'{{"n": {n}}}', content_type=JSON)
        for n in range(2)
    ]
    assert [a.status_code for a in accepted] == [202, 202]
    drain_queue()
    good, bad = (int(a.json()["response"]["uid"]) for a in accepted)
    poison(bad, "input", "output")

    status = caller.get(accepted[1]["Location"])
    assert status.status_code == 200 and status["Content-Type"] == JSON
    body = status.json()["response"]
    assert body["status"] == "succeeded" and body["data"] is None
    assert body["msg"] == (
        "The run's output cannot be read "
        "(unreadable: the stored JSON is nested too deeply to decode)"
    )
    assert caller.get(accepted[0]["Location"]).json()["response"]["data"]["body"] == {"n": 0}

    listing = admin_client.get("/admin/workflows/execution/")
    assert listing.status_code == 200
    assert str(good) in listing.content.decode() and str(bad) in listing.content.decode()
    page = admin_client.get(f"/admin/workflows/execution/{bad}/change/")
    assert page.status_code == 200
    assert "the stored JSON is nested too deeply to decode" in page.content.decode()
    assert admin_client.get(f"/admin/workflows/execution/{good}/change/").status_code == 200

    out = StringIO()
    call_command("show_execution", str(bad), stdout=out)
    shown = json.loads(out.getvalue())
    assert (
        shown["input"]
        == shown["output"]
        == ("unreadable: the stored JSON is nested too deeply to decode")
    )
    out = StringIO()
    call_command("show_execution", str(good), stdout=out)
    assert json.loads(out.getvalue())["input"]["body"] == {"n": 0}


def test_an_unreadable_run_is_failed_and_its_callback_says_why(settle):  # noqa: F811
    with Receiver() as receiver:
        api = callback_api(receiver.url)
        uids = [
            execution_start(workflow=api.workflow, trigger_input={"body": {"n": n}}, api=api).uid
            for n in range(2)
        ]
        poison(uids[1], "input")
        settle()
    payloads = {p["uid"]: p for p in (json.loads(r["body"]) for r in receiver.requests)}
    assert payloads[str(uids[0])]["status"] == "succeeded"
    assert payloads[str(uids[1])]["status"] == ExecutionStatus.FAILED
    assert "The run's input cannot be read" in payloads[str(uids[1])]["msg"]
    assert not Execution.objects.filter(status__in=["queued", "running"]).exists()


def test_an_unreadable_run_is_not_re_run_and_the_operator_is_told_why(admin_client, open_api):
    uid = execution_start(workflow=open_api.workflow, trigger_input={"body": {}}).uid
    poison(uid, "input")
    with pytest.raises(CommandError, match="cannot be re-run: its input is unreadable"):
        call_command("rerun_execution", str(uid), stdout=StringIO())
    page = admin_client.post(
        "/admin/workflows/execution/",
        {"action": "rerun_selected", "_selected_action": [uid]},
        follow=True,
    )
    assert page.status_code == 200
    assert "cannot be re-run: its input is unreadable" in page.content.decode()
    assert not Execution.objects.filter(rerun_of=uid).exists()
