"""The engine and the step library, run through the real queue (drained in-process)."""

import os
from urllib.parse import parse_qs

import pytest
from django.core.exceptions import ValidationError

from tests.conftest import execution_start, make_workflow
from tests.support.queue import drain_queue, queue_is_redis
from tests.support.sandbox import SANDBOX_ESCAPE
from tests.support.servers import RecordingServer
from workflows.models import Execution, ExecutionStatus, Step, StepRun, Workflow
from workflows.services import execution_run

pytestmark = pytest.mark.django_db


def run(steps, body=None, query=None) -> Execution:
    workflow = make_workflow(f"wf-{Workflow.objects.count()}", steps)
    trigger_input = {"method": "POST", "body": body or {}, "query": query or {}, "headers": {}}
    execution = execution_start(workflow=workflow, trigger_input=trigger_input)
    assert drain_queue() == 1
    execution.refresh_from_db()
    return execution


def test_transform_keeps_json_types_of_whole_value_references():
    execution = run(
        [
            (
                "t",
                "transform",
                {
                    "value": {
                        "items": "{{ body['items'] }}",
                        "count": "{{ body['items'] | length }}",
                        "flag": "{{ body.flag }}",
                        "nothing": "{{ body.none }}",
                        "text": "n={{ body['items'] | length }}",
                        "literal": [1, "plain", {"k": None}],
                    }
                },
            )
        ],
        body={"items": [1, 2, 3], "flag": False, "none": None},
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {
        "items": [1, 2, 3],
        "count": 3,
        "flag": False,
        "nothing": None,
        "text": "n=3",
        "literal": [1, "plain", {"k": None}],
    }


def test_steps_see_earlier_outputs_by_key():
    execution = run(
        [
            ("a", "transform", {"value": {"n": "{{ body.n }}"}}),
            ("b", "transform", {"value": "{{ steps.a.n * 2 }}"}),
            ("out", "output", {"value": {"a": "{{ steps.a }}", "b": "{{ steps.b }}"}}),
        ],
        body={"n": 21},
    )
    assert execution.output == {"a": {"n": 21}, "b": 42}


def test_missing_reference_fails_the_run_naming_the_expression():
    execution = run([("t", "transform", {"value": "{{ body.missing }}"})], body={})
    assert execution.status == ExecutionStatus.FAILED
    assert "{{ body.missing }}" in execution.error and "'t'" in execution.error
    step_run = StepRun.objects.get(execution=execution)
    assert step_run.status == "failed" and "body.missing" in step_run.error


def test_failing_step_stops_the_run_and_later_steps_do_not_run():
    execution = run(
        [
            ("ok", "transform", {"value": 1}),
            ("boom", "code", {"code": "raise ValueError('bad input ' + str(data['body']['x']))"}),
            ("never", "output", {"value": "unreached"}),
        ],
        body={"x": 7},
    )
    assert execution.status == ExecutionStatus.FAILED
    assert "ValueError: bad input 7" in execution.error
    assert list(execution.step_runs.values_list("key", "status")) == [
        ("ok", "succeeded"),
        ("boom", "failed"),
    ]
    assert execution.finished_at is not None


def test_code_step_runs_python_with_json_in_and_out_and_captures_prints():
    execution = run(
        [
            (
                "c",
                "code",
                {
                    "input": {"words": "{{ body.words }}"},
                    "code": "print('counting', len(data['words']))\n"
                    "return {'upper': [w.upper() for w in data['words']]}",
                },
            )
        ],
        body={"words": ["a", "b"]},
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"upper": ["A", "B"]}
    assert "counting 2" in execution.step_runs.get().logs


def test_code_step_sees_every_expression_name_by_default():
    execution = run([("c", "code", {"code": "return sorted(data)"})])
    assert execution.output == [
        "body",
        "env",
        "execution",
        "headers",
        "input",
        "method",
        "query",
        "steps",
        "vars",
    ]


def test_code_step_is_killed_at_its_time_limit():
    execution = run([("c", "code", {"code": "while True:\n    pass", "timeout": 0.5})])
    assert execution.status == ExecutionStatus.FAILED
    assert "timed out after 0.5 s" in execution.error
    assert execution.step_runs.get().duration_ms < 5000


def test_code_step_is_stopped_at_its_memory_limit():
    execution = run([("c", "code", {"code": "x = bytearray(512 * 1024 * 1024)", "memory_mb": 64})])
    assert execution.status == ExecutionStatus.FAILED
    assert "MemoryError" in execution.error


def test_code_step_cannot_see_platform_settings_or_secrets():
    code = (
        SANDBOX_ESCAPE + "try:\n"
        "    import django\n"
        "    has_django = True\n"
        "except ImportError:\n"
        "    has_django = False\n"
        "return {'env': sorted(os.environ), 'django': has_django, 'cwd': os.getcwd()}"
    )
    execution = run([("c", "code", {"code": code})])
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    env = execution.output["env"]
    assert not {"SECRET_KEY", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "REDIS_URL"} & set(env)
    assert execution.output["django"] is False
    assert "iolinker-code-" in execution.output["cwd"]


def test_code_step_cannot_read_any_process_environment_with_platform_settings():
    # Workers' environments hold DATABASE_URL, SECRET_KEY, REDIS_URL.
    code = (
        SANDBOX_ESCAPE + "readable = []\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        if b'DJANGO_SETTINGS_MODULE' in open(f'/proc/{pid}/environ', 'rb').read():\n"
        "            readable.append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
        "return readable"
    )
    execution = run([("c", "code", {"code": code})])
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == []


def test_code_steps_reuse_a_warm_sandbox_and_survive_its_loss():
    from workflows.steps.code import _Sandbox

    first = run([("c", "code", {"code": "return 1"})])
    zygote = _Sandbox.proc
    os.kill(zygote.pid, 9)
    zygote.wait()
    second = run([("c", "code", {"code": "return 2"})])
    assert (first.output, second.output) == (1, 2)
    assert _Sandbox.proc is not zygote and _Sandbox.proc.poll() is None


def run_each(steps, bodies) -> list[Execution]:
    """One run per body, of one workflow, drained one after another."""
    workflow = make_workflow(f"wf-{Workflow.objects.count()}", steps)
    executions = [
        execution_start(workflow=workflow, trigger_input={"body": body, "headers": {}})
        for body in bodies
    ]
    assert drain_queue() == len(bodies)
    for execution in executions:
        execution.refresh_from_db()
    return executions


def test_runs_of_a_code_step_share_a_sandbox_child_but_not_its_namespace_or_files():
    code = (
        SANDBOX_ESCAPE + "global scratch\n"
        "found = {'files': sorted(os.listdir('.')), 'leaked': 'scratch' in globals()}\n"
        "scratch = data['body']['n']\n"
        "open('mine.txt', 'w').write('x')\n"
        "return {**found, 'pid': os.getpid()}"
    )
    runs = run_each([("c", "code", {"code": code})], [{"n": n} for n in range(3)])
    assert [r.status for r in runs] == [ExecutionStatus.SUCCEEDED] * 3, runs[0].error
    assert [r.output["files"] for r in runs] == [[], [], []]
    assert [r.output["leaked"] for r in runs] == [False, False, False]
    assert len({r.output["pid"] for r in runs}) == 1  # one child served all three


def test_different_code_steps_never_share_a_sandbox_child():
    pid = {"code": SANDBOX_ESCAPE + "return os.getpid()"}
    other = {"code": SANDBOX_ESCAPE + "return os.getpid()  # another step"}
    (execution,) = run_each([("a", "code", pid), ("b", "code", other)], [{}])
    steps = {s.key: s.output for s in execution.step_runs.all()}
    assert steps["a"] != steps["b"]


def test_a_code_step_that_times_out_or_crashes_does_not_break_later_runs():
    code = (
        SANDBOX_ESCAPE + "if data['body'].get('hang'):\n"
        "    while True:\n"
        "        pass\n"
        "if data['body'].get('crash'):\n"
        "    os._exit(3)\n"
        "return 'ok'"
    )
    bodies = [{}, {"hang": True}, {}, {"crash": True}, {}]
    runs = run_each([("c", "code", {"code": code, "timeout": 0.5})], bodies)
    assert [r.status for r in runs] == ["succeeded", "failed", "succeeded", "failed", "succeeded"]
    assert "timed out after 0.5 s" in runs[1].error
    assert "exit code 3" in runs[3].error


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to `nobody` needs the worker to be root")
def test_code_step_cannot_read_the_platform_files(settings):
    secret_file = settings.VAR_DIR / "secret_key"
    execution = run([("c", "code", {"code": f"return open({str(secret_file)!r}).read()"})])
    assert execution.status == ExecutionStatus.FAILED
    assert "PermissionError" in execution.error


def test_code_step_cannot_start_processes_that_outlive_it():
    code = SANDBOX_ESCAPE + "pid = os.fork()\nreturn pid"
    execution = run([("c", "code", {"code": code})])
    assert execution.status == ExecutionStatus.FAILED
    assert "BlockingIOError" in execution.error or "PermissionError" in execution.error


def test_code_step_must_return_json():
    execution = run([("c", "code", {"code": "return {1, 2}"})])
    assert execution.status == ExecutionStatus.FAILED
    assert "not JSON" in execution.error


def test_http_step_calls_a_server_and_returns_status_headers_and_body():
    with RecordingServer() as server:
        execution = run(
            [
                (
                    "call",
                    "http",
                    {
                        "method": "POST",
                        "url": server.url + "/hook?src={{ body.src }}",
                        "json": {"id": "{{ body.id }}"},
                    },
                ),
                ("out", "output", {"value": "{{ steps.call.body.echo }}"}),
            ],
            body={"id": 5, "src": "test"},
        )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"id": 5}
    assert server.requests == [{"method": "POST", "path": "/hook?src=test", "body": '{"id":5}'}]
    call = execution.step_runs.get(key="call")
    assert call.output["status"] == 200
    assert call.output["headers"]["content-type"] == "application/json"


def test_http_step_sends_a_form_body_from_templates():
    with RecordingServer() as server:
        execution = run(
            [("call", "http", {"url": server.url, "form": {"name": "{{ body.name }}", "n": 2}})],
            body={"name": "a b"},
        )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    [request] = server.requests  # (PostgreSQL's jsonb may reorder the fields)
    assert request["method"] == "POST" and parse_qs(request["body"]) == {
        "name": ["a b"],
        "n": ["2"],
    }


def test_http_step_fails_on_an_error_status_and_records_the_response():
    with RecordingServer() as server:
        execution = run([("call", "http", {"url": server.url + "/fail"})])
    assert execution.status == ExecutionStatus.FAILED
    assert "answered 500" in execution.error
    assert execution.step_runs.get().output["status"] == 500


def test_http_step_can_continue_on_an_error_status():
    with RecordingServer() as server:
        execution = run([("call", "http", {"url": server.url + "/fail", "fail_on_error": False})])
    assert execution.status == ExecutionStatus.SUCCEEDED
    assert execution.output["status"] == 500


def test_http_step_reports_an_unreachable_server(outbound_loopback):
    execution = run([("call", "http", {"url": "http://127.0.0.1:9/", "timeout": 2})])
    assert execution.status == ExecutionStatus.FAILED
    assert "failed" in execution.error


def test_redelivered_task_does_not_run_a_claimed_execution_twice():
    workflow = make_workflow("wf", [("t", "transform", {"value": 1})])
    execution = execution_start(workflow=workflow, trigger_input={"body": {}})
    assert execution_run(uid=execution.uid) is not None
    assert execution_run(uid=execution.uid) is None  # a second delivery of the same task
    execution.refresh_from_db()
    assert execution.attempts == 1
    assert execution.step_runs.count() == 1


def test_workflow_without_steps_succeeds_with_no_output():
    execution = run([])
    assert execution.status == ExecutionStatus.SUCCEEDED
    assert execution.output is None


@pytest.mark.parametrize(
    "step_type,config,message",
    [
        ("transform", {}, "'value' is a required property"),
        ("transform", {"value": "{{ body. }}"}, "{{ body. }}"),
        ("code", {"code": "return (", "timeout": 5}, "code: line 1"),
        ("code", {"code": "x", "timeout": 10_000}, "timeout"),
        ("http", {"url": "http://x", "method": "FETCH"}, "method"),
        ("http", {"url": "http://x", "extra": 1}, "Additional properties"),
        ("output", [], "is not of type 'object'"),
    ],
)
def test_invalid_step_config_is_refused_on_save_with_a_clear_error(step_type, config, message):
    workflow = make_workflow("wf")
    step = Step(workflow=workflow, key="s", type=step_type, config=config)
    with pytest.raises(ValidationError) as exc:
        step.full_clean()
    assert message in str(exc.value.message_dict["config"])


def test_unknown_step_type_is_refused_on_save():
    step = Step(workflow=make_workflow("wf"), key="s", type="teleport", config={})
    with pytest.raises(ValidationError) as exc:
        step.full_clean()
    assert "type" in exc.value.message_dict


def test_a_worker_goes_on_with_the_oldest_queued_runs_and_none_runs_twice():
    from workflows.tasks import run_executions

    workflow = make_workflow("wf", [("t", "transform", {"value": "{{ body.n }}"})])
    executions = [
        execution_start(workflow=workflow, trigger_input={"body": {"n": n}}) for n in range(5)
    ]
    run_executions([executions[-1].uid])  # one message; the worker takes the rest too
    assert drain_queue() == 5  # the five messages still arrive, and find nothing to do
    runs = Execution.objects.order_by("uid")
    assert [r.status for r in runs] == [ExecutionStatus.SUCCEEDED] * 5
    assert [r.output for r in runs] == [0, 1, 2, 3, 4]
    assert [r.attempts for r in runs] == [1] * 5
    assert StepRun.objects.count() == 5
    if not queue_is_redis():  # with Redis a worker runs its own message's runs only
        started = [r.started_at for r in runs]
        assert started[4] <= min(started[:4])  # its own run first, then the oldest


@pytest.mark.django_db(transaction=True)
def test_workers_taking_queued_runs_at_once_never_take_the_same_run():
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from workflows.services import execution_run_batch

    workflow = make_workflow("wf", [("t", "transform", {"value": 1})])
    for _ in range(120):
        execution_start(workflow=workflow, trigger_input={"body": {}})

    def worker(_):
        try:
            return execution_run_batch(uids=[], steal=True)
        finally:
            connection.close()

    with ThreadPoolExecutor(3) as pool:
        taken = [uid for ran in pool.map(worker, range(3)) for uid in ran]
    assert len(taken) == len(set(taken)) == 120
    assert set(Execution.objects.values_list("status", "attempts")) == {("succeeded", 1)}
    assert StepRun.objects.count() == 120
