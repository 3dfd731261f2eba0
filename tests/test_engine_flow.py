"""Control flow of the engine: branches, loops, error policies, retries, limits,
delays, sub-workflows and the names expressions see (through the real queue)."""

import time

import pytest
from django.core.exceptions import ValidationError
from django_q.models import Schedule

from tests.conftest import execution_start, make_workflow
from tests.support.queue import drain_queue
from tests.support.servers import RecordingServer
from workflows.lifecycle import execution_resume_due
from workflows.models import EnvironmentVariable, Execution, ExecutionStatus, StepRun, Workflow
from workflows.selectors import execution_status
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db


def run(steps, body=None, **workflow_options) -> Execution:
    workflow = workflow_create(
        name=f"wf-{Workflow.objects.count()}", steps=list(steps), **workflow_options
    )
    execution = execution_start(
        workflow=workflow, trigger_input={"method": "POST", "body": body or {}}
    )
    drain_queue()
    execution.refresh_from_db()
    return execution


def ran(execution) -> list[str]:
    return list(execution.step_runs.order_by("position").values_list("path", flat=True))


BRANCHES = [
    {
        "key": "check",
        "type": "condition",
        "config": {
            "cases": [{"when": "{{ body.n > 10 }}", "next": "big"}],
            "default": "small",
        },
    },
    {"key": "big", "type": "output", "config": {"value": "big"}, "next": "end"},
    {"key": "small", "type": "output", "config": {"value": "small"}},
]


@pytest.mark.parametrize(("n", "expected"), [(11, "big"), (3, "small")])
def test_a_condition_branches_to_the_step_of_the_first_true_case(n, expected):
    execution = run(BRANCHES, body={"n": n})
    assert execution.status == ExecutionStatus.SUCCEEDED and execution.output == expected
    assert ran(execution) == ["check", expected]


def test_cases_are_evaluated_only_until_one_matches():
    steps = [
        {
            "key": "check",
            "type": "condition",
            "config": {
                "cases": [
                    {"when": "{{ true }}", "next": "yes"},
                    {"when": "{{ body.missing.deeper }}", "next": "yes"},
                ]
            },
        },
        {"key": "yes", "type": "output", "config": {"value": "{{ steps.check }}"}},
    ]
    assert run(steps).output == {"case": 0, "next": "yes"}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [
                {"key": "a", "type": "transform", "config": {"value": 1}},
                {"key": "b", "type": "transform", "config": {"value": 2}, "next": "a"},
            ],
            "jumps only go forward",
        ),
        ([{"key": "a", "type": "transform", "config": {"value": 1}, "next": "nowhere"}], "no step"),
        (
            [{"key": "a", "type": "condition", "config": {"cases": [{"when": 1, "next": "zz"}]}}],
            "no step 'zz'",
        ),
        (
            [{"key": "a", "type": "http", "config": {"url": "http://x"}, "on_error": "branch"}],
            "error_next",
        ),
        (
            [
                {
                    "key": "l",
                    "type": "loop",
                    "config": {"items": [1], "steps": [{"key": "x", "type": "nope"}]},
                }
            ],
            "unknown step type",
        ),
    ],
)
def test_a_definition_with_a_bad_jump_or_inner_step_is_refused(steps, message):
    with pytest.raises(ValidationError) as caught:
        workflow_create(name="bad", steps=steps)
    assert message in str(caught.value)


def test_a_loop_runs_its_steps_for_each_item_and_collects_their_outputs():
    execution = run(
        [
            {"key": "base", "type": "transform", "config": {"value": 100}},
            {
                "key": "each",
                "type": "loop",
                "config": {
                    "items": "{{ body.items }}",
                    "steps": [
                        {
                            "key": "double",
                            "type": "transform",
                            "config": {"value": "{{ item * 2 }}"},
                        },
                        {
                            "key": "out",
                            "type": "output",
                            "config": {"value": "{{ [index, steps.double + steps.base] }}"},
                        },
                    ],
                },
            },
        ],
        body={"items": [1, 2, 3]},
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == [[0, 102], [1, 104], [2, 106]]
    assert "each[2].out" in ran(execution)


def test_a_loop_over_more_items_than_allowed_fails_with_a_clear_error():
    execution = run(
        [
            {
                "key": "each",
                "type": "loop",
                "config": {
                    "items": "{{ body.items }}",
                    "max_iterations": 2,
                    "steps": [{"key": "x", "type": "transform", "config": {"value": 1}}],
                },
            }
        ],
        body={"items": [1, 2, 3]},
    )
    assert execution.status == ExecutionStatus.FAILED
    assert "3 items exceed max_iterations (2)" in execution.error


def test_a_failing_step_in_a_loop_fails_the_loop_step_under_its_policy():
    execution = run(
        [
            {
                "key": "each",
                "type": "loop",
                "on_error": "continue",
                "config": {
                    "items": [1, 0],
                    "steps": [
                        {"key": "inv", "type": "transform", "config": {"value": "{{ 1 / item }}"}}
                    ],
                },
            },
            {"key": "out", "type": "output", "config": {"value": "{{ steps.each }}"}},
        ]
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert "division by zero" in execution.output["error"]


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


def test_expressions_read_workflow_variables_and_environment_variables():
    EnvironmentVariable.objects.create(name="REGION", value="eu-west")
    execution = run(
        [
            {
                "key": "out",
                "type": "output",
                "config": {"value": "{{ vars.greeting }} from {{ env.REGION }}"},
            }
        ],
        variables={"greeting": "hello"},
    )
    assert execution.output == "hello from eu-west"


def test_a_short_delay_waits_in_place():
    execution = run([{"key": "pause", "type": "delay", "config": {"seconds": 0.1}}])
    assert execution.status == ExecutionStatus.SUCCEEDED and execution.output == {"waited": 0.1}


def test_a_long_delay_frees_the_worker_and_resumes_without_repeating_earlier_steps(settings):
    settings.IOLINKER_DELAY_INLINE_SECONDS = 0
    with RecordingServer() as server:
        execution = run(
            [
                {"key": "before", "type": "http", "config": {"url": server.url}},
                {"key": "pause", "type": "delay", "config": {"seconds": 0.5}},
                {
                    "key": "after",
                    "type": "output",
                    "config": {"value": "{{ steps.before.status }}"},
                },
            ]
        )
        assert execution.status == ExecutionStatus.WAITING and execution.resume_at
        assert execution.finished_at is None
        assert Schedule.objects.filter(
            func="workflows.tasks.resume_waiting_executions", next_run=execution.resume_at
        ).exists()
        assert execution_resume_due() == 0  # not yet
        time.sleep(0.6)
        assert execution_resume_due() == 1
        drain_queue()
        execution.refresh_from_db()
    assert execution.status == ExecutionStatus.SUCCEEDED and execution.output == 200
    assert len(server.requests) == 1
    assert ran(execution) == ["before", "pause", "after"]


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


def test_values_no_database_can_store_are_made_storable():
    # PostgreSQL refuses NaN in jsonb: the run must not fail to be recorded (found by review).
    execution = run(
        [{"key": "t", "type": "output", "config": {"value": {"v": "{{ body.v | float }}"}}}],
        body={"v": "nan"},
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"v": None}


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
