"""Cancel, re-run and the reaper: a run stops when asked, and a run whose worker
dies resumes elsewhere without repeating the steps that had finished."""

import threading
import time

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from tests.conftest import execution_start, make_api, make_workflow, needs_service
from tests.support.environment import redis_url_or_reason
from tests.support.processes import Platform
from tests.support.queue import drain_queue, queue_is_redis
from tests.support.servers import RecordingServer
from triggers.models import AuthMode
from workflows.lifecycle import (
    NotCancellable,
    execution_cancel,
    execution_recover_stale,
    execution_rerun,
    execution_resume_due,
)
from workflows.models import Execution, ExecutionStatus, StepRun
from workflows.selectors import execution_status
from workflows.services import execution_run

SLEEPY = [
    ("sleep", "code", {"code": "import time\ntime.sleep(30)", "timeout": 60}),
    ("never", "output", {"value": 1}),
]


def wait_for(predicate, timeout: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db
def test_a_queued_run_is_cancelled_at_once_and_never_runs():
    execution = execution_start(workflow=make_workflow("q", SLEEPY), trigger_input={"body": {}})
    cancelled = execution_cancel(uid=execution.uid)
    assert cancelled.status == ExecutionStatus.CANCELLED and cancelled.finished_at
    assert execution_cancel(uid=execution.uid).status == ExecutionStatus.CANCELLED  # idempotent
    drain_queue()
    assert not StepRun.objects.exists()
    status = execution_status(Execution.objects.get(uid=execution.uid))
    assert status["status"] == "cancelled" and status["code"] == 2 and status["msg"]


@pytest.mark.django_db
def test_a_waiting_run_is_cancelled_and_not_resumed(settings):
    settings.IOLINKER_DELAY_INLINE_SECONDS = 0
    workflow = make_workflow("w", [("pause", "delay", {"seconds": 0.01})])
    execution = execution_start(workflow=workflow, trigger_input={"body": {}})
    drain_queue()
    assert Execution.objects.get(uid=execution.uid).status == ExecutionStatus.WAITING
    assert execution_cancel(uid=execution.uid).status == ExecutionStatus.CANCELLED
    time.sleep(0.02)
    assert execution_resume_due() == 0


@pytest.mark.django_db
def test_a_finished_run_cannot_be_cancelled(capsys):
    execution = execution_start(
        workflow=make_workflow("f", [("t", "transform", {"value": 1})]), trigger_input={}
    )
    drain_queue()
    with pytest.raises(NotCancellable, match="already ended succeeded"):
        execution_cancel(uid=execution.uid)
    with pytest.raises(CommandError, match="already ended"):
        call_command("cancel_execution", str(execution.uid))
    assert execution_cancel(uid=12345) is None


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_run_kills_its_code_step_and_ends_it_cancelled(settings):
    settings.IOLINKER_CANCEL_POLL_MS = 100
    execution = execution_start(workflow=make_workflow("r", SLEEPY), trigger_input={"body": {}})

    def worker():
        try:
            execution_run(uid=execution.uid)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    wait_for(
        lambda: Execution.objects.get(uid=execution.uid).status == ExecutionStatus.RUNNING,
        what="the run to start",
    )
    time.sleep(0.3)  # the code step is sleeping in its sandbox
    started = time.monotonic()
    call_command("cancel_execution", str(execution.uid))
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3  # not the step's 30 s
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED and execution.finished_at
    step = StepRun.objects.get(execution=execution)
    assert step.key == "sleep" and step.status == "failed" and "cancelled" in step.error


@pytest.mark.django_db
def test_a_rerun_is_a_new_linked_run_with_the_same_input(capsys):
    workflow = make_workflow("again", [("out", "output", {"value": "{{ body.n }}"})])
    first = execution_start(workflow=workflow, trigger_input={"body": {"n": 7}})
    drain_queue()
    second = execution_rerun(uid=first.uid)
    assert second.uid != first.uid and second.rerun_of_id == first.uid
    call_command("rerun_execution", str(first.uid))
    third_uid = int(capsys.readouterr().out.strip())
    drain_queue()
    for uid in (second.uid, third_uid):
        run = Execution.objects.get(uid=uid)
        assert run.status == ExecutionStatus.SUCCEEDED and run.output == 7
        assert run.input == {"body": {"n": 7}} and run.rerun_of_id == first.uid


@pytest.fixture(params=["orm", "redis"])
def broker(request):
    if request.param == "redis":
        url, reason = redis_url_or_reason()
        needs_service(reason or None)
        if not queue_is_redis():
            pytest.skip("the test process uses the ORM broker (covered by the orm case)")
        return url
    if queue_is_redis():
        pytest.skip("the test process uses the Redis broker (covered by the redis case)")
    return None


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_is_killed_resumes_without_repeating_finished_steps(broker):
    with RecordingServer() as server:
        workflow = make_workflow(
            "killed",
            [
                ("notify", "http", {"url": server.url, "json": {"event": "started"}}),
                ("work", "code", {"code": "import time\ntime.sleep(3)\nreturn 'done'"}),
                ("out", "output", {"value": "{{ steps.work }}"}),
            ],
        )
        make_api(workflow, module="reaper", method="run", auth_mode=AuthMode.NONE)
        platform = Platform(redis_url=broker, env={"IOLINKER_RUN_LEASE_SECONDS": "2"}).start()
        try:
            response = httpx.post(f"{platform.base_url}/v1/api/reaper/run/async", json={})
            uid = int(response.json()["response"]["uid"])
            wait_for(
                lambda: StepRun.objects.filter(execution_id=uid, key="notify").exists(),
                what="the http step to finish",
            )
            assert Execution.objects.get(uid=uid).status == ExecutionStatus.RUNNING
        finally:
            platform.kill()  # SIGKILL: web server, cluster and workers, mid-run
        assert execution_recover_stale()["recovered"] == 0  # its lease has not lapsed yet
        time.sleep(2.5)
        row = Execution.objects.values("status", "lease_until", "started_at").get(uid=uid)
        assert execution_recover_stale()["recovered"] == 1, (row, timezone.now())
        assert Execution.objects.get(uid=uid).status == ExecutionStatus.QUEUED
        drain_queue()  # another worker (this process) takes it
        execution = Execution.objects.get(uid=uid)
        assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
        assert execution.output == "done" and execution.recoveries == 1
        assert len(server.requests) == 1  # the finished http step was not repeated
        assert StepRun.objects.filter(execution_id=uid, key="notify").count() == 1


@pytest.mark.django_db
def test_a_worker_that_lost_its_run_cannot_overwrite_what_happened_since():
    from workflows.services.running import chunk_save

    execution = execution_start(
        workflow=make_workflow("fenced", [("t", "transform", {"value": 1})]), trigger_input={}
    )
    # The reaper took the run back and another worker claimed it (attempt 2).
    Execution.objects.filter(uid=execution.uid).update(status=ExecutionStatus.RUNNING, attempts=2)
    stale = Execution.objects.get(uid=execution.uid)
    stale.attempts, stale.status, stale.output = 1, ExecutionStatus.SUCCEEDED, "stale"
    chunk_save([stale], [])
    row = Execution.objects.get(uid=execution.uid)
    assert row.status == ExecutionStatus.RUNNING and row.output is None
