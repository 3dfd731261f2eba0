"""Control flow of the engine: branches, loops, the names expressions see,
delays, and values made storable (through the real queue)."""

import time

import pytest
from django.core.exceptions import ValidationError
from django_q.models import Schedule

from tests.conftest import execution_start
from tests.support.queue import drain_queue
from tests.support.servers import RecordingServer
from workflows.lifecycle import execution_resume_due
from workflows.models import EnvironmentVariable, Execution, ExecutionStatus, Workflow
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


def test_values_no_database_can_store_are_made_storable():
    # PostgreSQL refuses NaN in jsonb: the run must not fail to be recorded (found by review).
    execution = run(
        [{"key": "t", "type": "output", "config": {"value": {"v": "{{ body.v | float }}"}}}],
        body={"v": "nan"},
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"v": None}
