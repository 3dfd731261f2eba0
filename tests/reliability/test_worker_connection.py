"""A worker whose database connection died while it waited (a restart, a cut)
retries its task once on a new connection instead of failing it: with Redis a
failed task's message is gone, and its runs would wait for the sweeper.
(tests/reliability/test_faults.py::test_database_unreachable_answers_503_then_service_resumes
fails on PostgreSQL + Redis without it.)"""

import pytest
from django.db import OperationalError

from workflows import tasks

pytestmark = pytest.mark.django_db


def test_a_run_task_retries_once_on_a_dead_connection(monkeypatch):
    calls = []

    def batch(*, uids, steal):
        calls.append(uids)
        if len(calls) == 1:
            raise OperationalError("consuming input failed: server closed the connection")
        return uids

    monkeypatch.setattr(tasks, "execution_run_batch", batch)
    tasks.run_executions([1, 2])
    assert calls == [[1, 2], [1, 2]]


def test_a_database_still_down_fails_the_task(monkeypatch):
    def batch(*, uids, steal):
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks, "execution_run_batch", batch)
    with pytest.raises(OperationalError):
        tasks.run_executions([3])
