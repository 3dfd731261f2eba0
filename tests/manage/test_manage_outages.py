"""The management API's re-run when the run queue is down: the domain's error in
the envelope (503 serverError.unavailable, as for a trigger), no run left."""

import pytest

from tests.conftest import execution_start, make_workflow
from tests.manage.conftest import error
from workflows.models import Execution
from workflows.services import queueing

pytestmark = pytest.mark.django_db


def test_a_rerun_with_the_queue_down_is_503_and_leaves_no_run(operator, monkeypatch):
    original = execution_start(
        workflow=make_workflow("w", [("result", "output", {"value": 1})]), trigger_input={}
    )

    def push_fails(**kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(queueing, "queue_is_transactional", lambda: False)
    monkeypatch.setattr(queueing, "queue_push", push_fails)
    response = operator.post(f"executions/{original.uid}/rerun/")
    assert response.status_code == 503
    assert error(response) == {
        "code": "serverError.unavailable",
        "message": "The run queue is unavailable, try again later",
    }
    assert list(Execution.objects.values_list("uid", flat=True)) == [original.uid]
