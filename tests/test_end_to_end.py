"""The whole platform as real processes: `manage.py serve` (granian + qcluster).

Runs on the database the suite runs on (SQLite by default, PostgreSQL with
DATABASE_URL) with the ORM broker, and again with the Redis broker.
"""

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import make_api, make_workflow, needs_service
from tests.support.environment import BASE_DIR, redis_url_or_reason
from tests.support.processes import Platform
from tests.support.servers import RecordingServer
from triggers import services
from triggers.models import AuthMode
from workflows.models import Execution, ExecutionStatus

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def pipeline_steps(hook_url: str):
    return [
        ("prepare", "transform", {"value": {"name": "{{ body.name }}", "n": "{{ body.n }}"}}),
        (
            "compute",
            "code",
            {
                "input": "{{ steps.prepare }}",
                "code": "return {'greeting': 'Hello, ' + data['name'], 'square': data['n'] ** 2}",
            },
        ),
        ("notify", "http", {"url": hook_url + "/hook", "json": "{{ steps.compute }}"}),
        (
            "result",
            "output",
            {"value": {"compute": "{{ steps.compute }}", "hook": "{{ steps.notify.status }}"}},
        ),
    ]


def wait_final(uid: int, timeout: float = 30) -> Execution:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = Execution.objects.get(uid=uid)
        if execution.is_final:
            return execution
        time.sleep(0.1)
    raise AssertionError(f"execution {uid} still {execution.status} after {timeout} s")


@pytest.fixture(params=["orm", "redis"])
def platform(request):
    redis_url = None
    if request.param == "redis":
        redis_url, reason = redis_url_or_reason()
        needs_service(reason or None)
    platform = Platform(redis_url=redis_url).start()
    yield platform
    platform.stop()


def test_a_triggered_multi_step_workflow_runs_on_a_real_cluster(platform):
    with RecordingServer() as hook:
        workflow = make_workflow("pipeline", pipeline_steps(hook.url))
        api = make_api(workflow, module="e2e", method="run", auth_mode=AuthMode.TOKEN)
        token = services.api_set_token(api=api)
        uids = []
        for n in range(5):
            response = httpx.post(
                f"{platform.base_url}/v1/api/e2e/run/async",
                json={"name": f"caller-{n}", "n": n},
                headers={"token": token},
                timeout=10,
            )
            assert response.status_code == 202, response.text
            assert response.headers["location"].endswith(response.json()["response"]["uid"])
            uids.append(int(response.json()["response"]["uid"]))
        executions = [wait_final(uid) for uid in uids]
    for n, execution in enumerate(executions):
        assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
        assert execution.output == {
            "compute": {"greeting": f"Hello, caller-{n}", "square": n * n},
            "hook": 200,
        }
        assert list(execution.step_runs.values_list("key", "status")) == [
            ("prepare", "succeeded"),
            ("compute", "succeeded"),
            ("notify", "succeeded"),
            ("result", "succeeded"),
        ]
        assert execution.attempts == 1
        assert execution.started_at >= execution.created_at
    assert len(hook.requests) == 5  # each run called the hook exactly once


def test_a_failing_step_marks_the_run_failed_on_a_real_cluster(platform):
    with RecordingServer() as hook:
        steps = pipeline_steps(hook.url)
        steps[2] = ("notify", "http", {"url": hook.url + "/fail"})
        make_api(make_workflow("pipeline", steps), module="e2e", method="run", auth_mode="none")
        response = httpx.post(
            f"{platform.base_url}/v1/api/e2e/run/async", json={"name": "x", "n": 2}, timeout=10
        )
        execution = wait_final(int(response.json()["response"]["uid"]))
    assert execution.status == ExecutionStatus.FAILED
    assert "'notify'" in execution.error and "answered 500" in execution.error
    assert [run.status for run in execution.step_runs.all()] == ["succeeded"] * 2 + ["failed"]


def test_caller_errors_are_json_envelopes_from_the_real_server(platform):
    make_api(make_workflow("pipeline", []), module="e2e", method="run", auth_mode="token")
    url = f"{platform.base_url}/v1/api/e2e/run/async"
    missing = httpx.post(url, content=b"{}", timeout=10)
    assert missing.status_code == 401
    assert missing.json() == {
        "response": {
            "error": {"code": "requestError.invalidParams", "message": "Token is required"}
        }
    }
    unknown = httpx.post(f"{platform.base_url}/v1/api/e2e/nope/async", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["response"]["error"]["code"] == "requestError.notFound"


def test_fire_api_command_waits_for_the_result(platform):
    with RecordingServer() as hook:
        workflow = make_workflow("pipeline", pipeline_steps(hook.url))
        debug_payload = {"name": "debug", "n": 3}
        make_api(workflow, module="e2e", method="run", debug_payload=debug_payload)
        fired = subprocess.run(
            [sys.executable, "manage.py", "fire_api", "e2e", "run", "--wait", "30"],
            cwd=BASE_DIR,
            env=platform.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert fired.returncode == 0, fired.stderr
    detail = json.loads(fired.stdout)
    assert detail["status"] == "succeeded"
    assert detail["output"]["compute"] == {"greeting": "Hello, debug", "square": 9}
    assert [step["key"] for step in detail["steps"]] == ["prepare", "compute", "notify", "result"]
