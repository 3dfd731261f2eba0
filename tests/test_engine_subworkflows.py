"""Sub-workflows: linked children that hand back their output, fire-and-forget
runs, depth limits, waiting children resumed by their parent, retried steps
that run their child again (through the real queue)."""

import time

import pytest

from tests.conftest import make_workflow
from tests.support.queue import drain_queue
from tests.support.servers import RecordingServer
from tests.test_engine_flow import run
from workflows.lifecycle import execution_resume_due
from workflows.models import Execution, ExecutionStatus, Workflow

pytestmark = pytest.mark.django_db


def test_a_subworkflow_runs_as_a_linked_child_and_hands_back_its_output():
    make_workflow("child", [("double", "output", {"value": "{{ body.n * 2 }}"})])
    execution = run(
        [
            {
                "key": "call",
                "type": "subworkflow",
                "config": {"workflow": "child", "input": {"n": "{{ body.n }}"}},
            },
            {"key": "out", "type": "output", "config": {"value": "{{ steps.call + 1 }}"}},
        ],
        body={"n": 20},
    )
    assert execution.status == ExecutionStatus.SUCCEEDED and execution.output == 41
    child = Execution.objects.get(parent=execution)
    assert child.uid != execution.uid and child.status == ExecutionStatus.SUCCEEDED
    assert child.output == 40 and child.input["body"] == {"n": 20} and child.version_id


def test_a_failing_subworkflow_fails_its_step_naming_the_child():
    make_workflow("broken", [("stop", "fail", {"message": "boom"})])
    execution = run([{"key": "call", "type": "subworkflow", "config": {"workflow": "broken"}}])
    child = Execution.objects.get(parent=execution)
    assert execution.status == ExecutionStatus.FAILED
    assert f"({child.uid}) ended failed" in execution.error and "boom" in execution.error


def test_a_fire_and_forget_subworkflow_is_queued_as_its_own_run():
    make_workflow("later", [("out", "output", {"value": "{{ body }}"})])
    execution = run(
        [
            {
                "key": "call",
                "type": "subworkflow",
                "config": {"workflow": "later", "input": {"a": 1}, "wait": False},
            }
        ]
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    child = Execution.objects.get(uid=int(execution.output["uid"]))
    assert child.parent_id == execution.uid
    drain_queue()  # the child's own message, if the worker did not take it already
    child.refresh_from_db()
    assert child.status == ExecutionStatus.SUCCEEDED and child.output == {"a": 1}


def test_sub_workflows_calling_themselves_stop_at_the_depth_limit(settings):
    settings.IOLINKER_SUBWORKFLOW_DEPTH = 3
    make_workflow("again", [("call", "subworkflow", {"workflow": "again"})])
    execution = run([{"key": "start", "type": "subworkflow", "config": {"workflow": "again"}}])
    assert execution.status == ExecutionStatus.FAILED
    assert "deeper than 3 levels" in execution.error


def test_a_disabled_subworkflow_is_refused():
    child = make_workflow("off", [("t", "transform", {"value": 1})])
    Workflow.objects.filter(pk=child.pk).update(enabled=False)
    execution = run([{"key": "s", "type": "subworkflow", "config": {"workflow": "off"}}])
    assert execution.status == ExecutionStatus.FAILED and "is disabled" in execution.error


def test_a_waiting_subworkflow_is_resumed_by_its_parent_only(settings):
    settings.IOLINKER_DELAY_INLINE_SECONDS = 0
    make_workflow(
        "napper",
        [("nap", "delay", {"seconds": 0.3}), ("done", "output", {"value": "{{ body.n }}"})],
    )
    execution = run(
        [
            {
                "key": "call",
                "type": "subworkflow",
                "config": {"workflow": "napper", "input": {"n": 5}},
            }
        ]
    )
    child = Execution.objects.get(parent=execution)
    assert execution.status == child.status == ExecutionStatus.WAITING
    assert child.resume_at is None and execution.resume_at  # the parent drives the child
    time.sleep(0.35)
    assert execution_resume_due() == 1  # the parent only
    drain_queue()
    execution.refresh_from_db()
    child.refresh_from_db()
    assert execution.status == ExecutionStatus.SUCCEEDED and execution.output == 5
    assert child.status == ExecutionStatus.SUCCEEDED
    assert list(child.step_runs.values_list("key", flat=True)) == ["nap", "done"]


def test_a_retried_subworkflow_step_runs_its_child_again():
    with RecordingServer(fail_first=1) as server:
        make_workflow("flaky", [("call", "http", {"url": server.url})])
        execution = run(
            [
                {
                    "key": "sub",
                    "type": "subworkflow",
                    "config": {"workflow": "flaky"},
                    "retries": 1,
                    "retry_interval": 0,
                }
            ]
        )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    children = list(Execution.objects.filter(parent=execution).order_by("uid"))
    assert [c.status for c in children] == ["failed", "succeeded"]
    assert len(server.requests) == 2


def test_fire_and_forget_sub_workflows_stop_at_the_depth_limit(settings):
    settings.IOLINKER_SUBWORKFLOW_DEPTH = 3
    make_workflow("spawn", [("again", "subworkflow", {"workflow": "spawn", "wait": False})])
    run([{"key": "start", "type": "subworkflow", "config": {"workflow": "spawn", "wait": False}}])
    while drain_queue():
        pass
    assert Execution.objects.count() == 4  # the first run and 3 levels of children; no 4th
    assert Execution.objects.filter(status=ExecutionStatus.FAILED).count() == 1
    assert "deeper than 3 levels" in Execution.objects.get(status=ExecutionStatus.FAILED).error
