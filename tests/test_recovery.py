"""Runs never stay `running` or `queued` forever: timeouts, killed workers, lost messages."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.exceptions import TimeoutException
from django_q.timeout import TimeoutHandler

from tests.conftest import execution_start, make_workflow
from tests.support.queue import queued_messages
from workflows.lifecycle import execution_recover_stale
from workflows.models import Execution, ExecutionStatus, Workflow
from workflows.services import execution_run, queueing

pytestmark = pytest.mark.django_db


def start(steps=(("t", "transform", {"value": 1}),)) -> Execution:
    workflow = make_workflow(f"wf-{Workflow.objects.count()}", list(steps))
    return execution_start(workflow=workflow, trigger_input={"body": {}})


def test_a_run_stopped_by_the_queue_timeout_is_recorded_as_failed():
    execution = start([("slow", "code", {"code": "import time\ntime.sleep(5)", "timeout": 30})])
    with pytest.raises(TimeoutException), TimeoutHandler(1):  # what a django-q2 worker does
        execution_run(uid=execution.uid)
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED
    assert "stopped by its worker" in execution.error and execution.finished_at


def test_a_run_whose_worker_stopped_renewing_its_lease_is_queued_again(settings):
    execution = start()
    now = timezone.now()
    Execution.objects.filter(uid=execution.uid).update(
        status=ExecutionStatus.RUNNING, started_at=now, lease_until=now - timedelta(seconds=1)
    )
    renewed = start()
    Execution.objects.filter(uid=renewed.uid).update(
        status=ExecutionStatus.RUNNING, started_at=now, lease_until=now + timedelta(seconds=30)
    )
    before = queued_messages()
    assert execution_recover_stale()["recovered"] == 1
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.QUEUED and execution.recoveries == 1
    assert queued_messages() == before + 1
    assert Execution.objects.get(uid=renewed.uid).status == ExecutionStatus.RUNNING


def test_a_run_whose_worker_keeps_vanishing_is_failed_after_the_allowed_recoveries(settings):
    execution = start()
    long_ago = timezone.now() - timedelta(seconds=settings.IOLINKER_RUN_TIMEOUT + 121)
    Execution.objects.filter(uid=execution.uid).update(
        status=ExecutionStatus.RUNNING,
        started_at=long_ago,
        recoveries=settings.IOLINKER_RUN_MAX_RECOVERIES,
    )
    assert execution_recover_stale()["failed"] == 1
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED and "stopped without finishing" in (
        execution.error
    )


def test_a_queued_run_is_pushed_again_when_the_broker_is_not_transactional(settings, monkeypatch):
    monkeypatch.setattr(queueing, "queue_is_transactional", lambda: False)
    old = start()
    fresh = start()
    before = queued_messages()
    Execution.objects.filter(uid=old.uid).update(
        queued_at=timezone.now() - timedelta(seconds=settings.IOLINKER_REQUEUE_AFTER + 1)
    )
    assert execution_recover_stale() == {"failed": 0, "recovered": 0, "resumed": 0, "requeued": 1}
    assert queued_messages() == before + 1
    # Pushed again just now: not again on the next sweep.
    assert execution_recover_stale()["requeued"] == 0
    assert (
        Execution.objects.get(uid=fresh.uid).queued_at
        < Execution.objects.get(uid=old.uid).queued_at
    )
    # The duplicate message is harmless: only one delivery claims the run.
    assert execution_run(uid=old.uid) is not None
    assert execution_run(uid=old.uid) is None


def test_the_sweeper_is_scheduled_every_minute():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="workflows.tasks.recover_stale_executions")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1
    assert schedule.repeats < 0
