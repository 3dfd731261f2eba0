"""How the engine handles failing steps: error policies (continue, branch to an
error step), retries with backoff, step and workflow timeouts, the fail step,
and failures that name their cause (through the real queue)."""

import time

import pytest

from tests.support.servers import RecordingServer
from tests.test_engine_flow import ran, run
from workflows.models import ExecutionStatus, StepRun
from workflows.selectors import execution_status

pytestmark = pytest.mark.django_db


def test_a_failed_step_can_continue_with_its_error_as_output():
    with RecordingServer() as server:
        execution = run(
            [
                {
                    "key": "call",
                    "type": "http",
                    "config": {"url": server.url + "/fail"},
                    "on_error": "continue",
                },
                {"key": "out", "type": "output", "config": {"value": "{{ steps.call.error }}"}},
            ]
        )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert "answered 500" in execution.output


def test_a_failed_step_can_branch_to_an_error_step():
    with RecordingServer() as server:
        execution = run(
            [
                {
                    "key": "call",
                    "type": "http",
                    "config": {"url": server.url + "/fail"},
                    "on_error": "branch",
                    "error_next": "recover",
                },
                {"key": "happy", "type": "output", "config": {"value": "happy"}, "next": "end"},
                {"key": "recover", "type": "output", "config": {"value": "recovered"}},
            ]
        )
    assert execution.output == "recovered" and ran(execution) == ["call", "recover"]


def test_a_failing_step_is_retried_with_backoff_until_it_succeeds():
    with RecordingServer(fail_first=2) as server:
        started = time.monotonic()
        execution = run(
            [
                {
                    "key": "call",
                    "type": "http",
                    "config": {"url": server.url},
                    "retries": 3,
                    "retry_interval": 0.1,
                    "retry_backoff": 2,
                }
            ]
        )
        elapsed = time.monotonic() - started
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert len(server.requests) == 3
    step = StepRun.objects.get(execution=execution)
    assert (
        step.attempts == 3 and "retrying in 0.1 s" in step.logs and "retrying in 0.2 s" in step.logs
    )
    assert elapsed >= 0.3  # 0.1 + 0.2 of backoff


def test_retries_run_out_and_the_policy_applies():
    with RecordingServer() as server:
        execution = run(
            [
                {
                    "key": "call",
                    "type": "http",
                    "config": {"url": server.url + "/fail"},
                    "retries": 1,
                    "retry_interval": 0,
                }
            ]
        )
    assert execution.status == ExecutionStatus.FAILED and len(server.requests) == 2
    assert StepRun.objects.get(execution=execution).attempts == 2


def test_a_step_past_its_timeout_fails():
    execution = run(
        [
            {
                "key": "slow",
                "type": "code",
                "config": {"code": "import time\ntime.sleep(5)"},
                "timeout": 0.5,
            }
        ]
    )
    assert execution.status == ExecutionStatus.FAILED and "timed out" in execution.error


def test_a_run_past_its_workflow_timeout_ends_timed_out():
    started = time.monotonic()
    execution = run(
        [
            {"key": "slow", "type": "code", "config": {"code": "import time\ntime.sleep(5)"}},
            {"key": "never", "type": "output", "config": {"value": 1}},
        ],
        timeout_seconds=1,
    )
    assert time.monotonic() - started < 4
    assert execution.status == ExecutionStatus.TIMED_OUT
    assert "1 s time limit" in execution.error
    status = execution_status(execution)
    assert status["code"] == 3 and status["msg"] == execution.error
    assert ran(execution) == ["slow"]


def test_a_fail_step_fails_the_run_whatever_its_policy():
    execution = run(
        [
            {
                "key": "stop",
                "type": "fail",
                "config": {"message": "no stock for {{ body.sku }}"},
                "on_error": "continue",
            },
            {"key": "never", "type": "output", "config": {"value": 1}},
        ],
        body={"sku": "A1"},
    )
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error == "Step 'stop' (fail) failed: no stock for A1"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            {
                "key": "c",
                "type": "condition",
                "config": {"cases": [{"when": "{{ body.a.b }}", "next": "end"}]},
            },
            "body.a.b",
        ),
        (
            {"key": "d", "type": "delay", "config": {"seconds": "{{ body.wait }}"}},
            "seconds must be a number",
        ),
        ({"key": "d", "type": "delay", "config": {"seconds": "{{ -5 }}"}}, "between 0 and"),
        (
            {
                "key": "l",
                "type": "loop",
                "config": {
                    "items": "{{ body }}x",
                    "steps": [{"key": "t", "type": "transform", "config": {"value": 1}}],
                },
            },
            "items must be a list",
        ),
        (
            {"key": "s", "type": "subworkflow", "config": {"workflow": "missing"}},
            "no workflow named 'missing'",
        ),
    ],
)
def test_step_failures_name_their_cause(step, message):
    execution = run([step], body={"wait": "soon"})
    assert execution.status == ExecutionStatus.FAILED
    assert message in execution.error
