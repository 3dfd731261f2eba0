"""The admin's run, re-run, cancel and debug buttons (and the re-run command) when
the run queue or the database is down: a message, never a 500 page or a
traceback, and nothing left half-written."""

import pytest
from django.db import OperationalError, connection

from tests.conftest import execution_start, make_api
from triggers.models import ApiDefinition
from workflows import lifecycle
from workflows.models import Execution, ExecutionStatus
from workflows.services import queueing


def take_queue_down(monkeypatch) -> None:
    """The Redis broker path with Redis unreachable: runs commit, the push fails."""

    def push_fails(**kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(queueing, "queue_is_transactional", lambda: False)
    monkeypatch.setattr(queueing, "queue_push", push_fails)


@pytest.fixture
def queue_down(monkeypatch):
    take_queue_down(monkeypatch)


def database_down(monkeypatch, service: str) -> None:
    """Every statement of this lifecycle service fails as with PostgreSQL gone."""
    real = getattr(lifecycle, service)

    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection refused")

    def down(**kwargs):
        with connection.execute_wrapper(refuse):
            return real(**kwargs)

    monkeypatch.setattr(lifecycle, service, down)


def run_action(admin_client, workflow):
    data = {
        "action": "run_selected",
        "_selected_action": [workflow.pk],
        "run_input": "1",
        "input": '{"item": "lamp"}',
    }
    return admin_client.post("/admin/workflows/workflow/", data, follow=True)


def test_run_action_with_the_queue_down_says_so_and_leaves_no_run(
    admin_client, echo_workflow, queue_down
):
    response = run_action(admin_client, echo_workflow)
    assert response.status_code == 200
    assert "The run queue is unavailable, try again later" in response.content.decode()
    assert not Execution.objects.exists()


def test_rerun_button_with_the_queue_down_says_so_and_stays_on_the_run(
    admin_client, echo_workflow, monkeypatch
):
    original = execution_start(workflow=echo_workflow, trigger_input={"body": {}})
    page = f"/admin/workflows/execution/{original.uid}/change/"
    take_queue_down(monkeypatch)
    response = admin_client.post(f"/admin/workflows/execution/{original.uid}/rerun/")
    assert response.status_code == 302 and response["Location"] == page
    shown = admin_client.get(page).content.decode()
    assert "The run queue is unavailable, try again later" in shown
    assert list(Execution.objects.values_list("uid", flat=True)) == [original.uid]


# No test transaction around these: as in production, a failed statement must not
# doom the request's later queries (the session's save).
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "service, button", [("execution_rerun", "rerun"), ("execution_cancel", "cancel")]
)
def test_rerun_and_cancel_buttons_with_the_database_down_say_so(
    admin_client, echo_workflow, monkeypatch, service, button
):
    original = execution_start(workflow=echo_workflow, trigger_input={"body": {}})
    database_down(monkeypatch, service)
    response = admin_client.post(f"/admin/workflows/execution/{original.uid}/{button}/")
    assert response.status_code == 302
    shown = admin_client.get(response["Location"]).content.decode()
    assert "The database is unavailable, try again later" in shown
    assert Execution.objects.get(uid=original.uid).status == ExecutionStatus.QUEUED


@pytest.mark.django_db(transaction=True)
def test_rerun_and_cancel_actions_with_the_database_down_say_so(
    admin_client, echo_workflow, monkeypatch
):
    original = execution_start(workflow=echo_workflow, trigger_input={"body": {}})
    database_down(monkeypatch, "execution_rerun")
    database_down(monkeypatch, "execution_cancel")
    for action in ("rerun_selected", "cancel_selected"):
        response = admin_client.post(
            "/admin/workflows/execution/",
            {"action": action, "_selected_action": [original.uid]},
            follow=True,
        )
        assert response.status_code == 200
        assert "The database is unavailable, try again later" in response.content.decode()
    assert Execution.objects.get().status == ExecutionStatus.QUEUED


def test_debug_button_with_the_queue_down_says_so(admin_client, echo_workflow, queue_down):
    api = make_api(echo_workflow, auth_mode="none")
    ApiDefinition.objects.filter(pk=api.pk).update(debug_payload={"item": "lamp"})
    response = admin_client.post(f"/admin/triggers/apidefinition/{api.pk}/debug/", follow=True)
    assert response.status_code == 200
    assert "Debug call of shop/order refused: The run queue is unavailable" in (
        response.content.decode()
    )
    assert not Execution.objects.exists()


def test_rerun_command_with_the_queue_down_is_a_command_error(echo_workflow, monkeypatch):
    from django.core.management import CommandError, call_command

    original = execution_start(workflow=echo_workflow, trigger_input={"body": {}})
    take_queue_down(monkeypatch)
    with pytest.raises(CommandError, match="The run queue is unavailable"):
        call_command("rerun_execution", str(original.uid))
    assert Execution.objects.count() == 1
