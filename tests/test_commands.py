"""Operator commands: fire an API, show an execution, list APIs, rotate a token, bootstrap."""

import json
import os
import resource
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import make_api
from tests.support.queue import drain_queue
from triggers.models import ApiDefinition
from workflows.models import Execution, ExecutionStatus

pytestmark = pytest.mark.django_db


def run_command(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_fire_api_uses_the_debug_payload_and_prints_the_uid(open_api):
    open_api.debug_payload = {"item": "debug-book"}
    open_api.save()
    uid = run_command("fire_api", "shop", "order").strip()
    execution = Execution.objects.get(uid=int(uid))
    assert execution.status == ExecutionStatus.QUEUED
    assert execution.input["body"] == {"item": "debug-book"}
    assert drain_queue() == 1  # queued like an HTTP call


def test_fire_api_with_a_payload_runs_the_same_path_as_http(open_api):
    uid = run_command("fire_api", "shop", "order", "--payload", '{"item": "x"}').strip()
    drain_queue()
    execution = Execution.objects.get(uid=int(uid))
    assert execution.output == {"body": {"item": "x"}, "query": {}, "method": "POST"}


def test_fire_api_sends_the_payload_as_query_for_a_get_api(echo_workflow):
    make_api(echo_workflow, method="find", http_method="GET", auth_mode="none")
    uid = run_command("fire_api", "shop", "find", "--payload", '{"q": "a", "n": 2}').strip()
    drain_queue()
    assert Execution.objects.get(uid=int(uid)).output["query"] == {"q": "a", "n": "2"}


def test_fire_api_reads_a_payload_file(open_api, tmp_path):
    path = tmp_path / "payload.json"
    path.write_text('{"from": "file"}')
    uid = run_command("fire_api", "shop", "order", "--payload-file", str(path)).strip()
    assert Execution.objects.get(uid=int(uid)).input["body"] == {"from": "file"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["nope", "order"], "not found"),
        (["shop", "order", "--payload", "[1]"], "JSON object"),
        (["shop", "order", "--payload", "{bad"], "Invalid payload"),
        (["shop", "order", "--payload-file", "/nonexistent.json"], "Invalid payload"),
    ],
)
def test_fire_api_reports_operator_mistakes(open_api, args, message):
    with pytest.raises(CommandError, match=message):
        run_command("fire_api", *args)
    assert not Execution.objects.exists()


def test_fire_api_refuses_a_disabled_api(open_api):
    open_api.enabled = False
    open_api.save()
    with pytest.raises(CommandError, match="not enabled"):
        run_command("fire_api", "shop", "order")


def test_fire_api_wait_reports_a_run_that_did_not_finish(open_api):
    # No worker is running in this test: the run stays queued past the wait.
    with pytest.raises(CommandError, match="is queued"):
        run_command("fire_api", "shop", "order", "--wait", "0.3")


def test_show_execution_prints_the_run_with_its_steps(open_api):
    uid = run_command("fire_api", "shop", "order", "--payload", '{"a": 1}').strip()
    drain_queue()
    detail = json.loads(run_command("show_execution", uid))
    assert detail["uid"] == uid and detail["status"] == "succeeded"
    assert detail["api"] == "shop/order" and detail["workflow"] == "echo"
    assert [s["key"] for s in detail["steps"]] == ["shape", "result"]
    assert detail["steps"][0]["output"]["body"] == {"a": 1}


@pytest.mark.parametrize("uid,message", [("123", "No execution 123"), ("abc", "not an execution")])
def test_show_execution_reports_unknown_uids(db, uid, message):
    with pytest.raises(CommandError, match=message):
        run_command("show_execution", uid)


def test_list_apis_shows_urls_and_state(open_api, token_api):
    token_api.enabled = False
    token_api.save()
    out = run_command("list_apis")
    assert "http://localhost:8000/v1/api/shop/order/async" in out
    lines = {line.split()[3]: line for line in out.splitlines()[1:]}
    assert lines["http://localhost:8000/v1/api/shop/secure/async"].startswith("disabled")
    assert "token" in lines["http://localhost:8000/v1/api/shop/secure/async"]


def test_rotate_token_prints_a_new_working_token(caller, token_api):
    token = run_command("rotate_token", "shop", "secure", "--yes").strip()
    assert token != token_api.plain_token
    ok = caller.post(
        "/v1/api/shop/secure/async",
        headers={"token": token},
        data="{}",
        content_type="application/json",
    )
    assert ok.status_code == 202


def test_rotate_token_without_yes_changes_nothing(caller, token_api):
    out = run_command("rotate_token", "shop", "secure")
    assert "--yes" in out
    still = caller.post(
        "/v1/api/shop/secure/async",
        headers={"token": token_api.plain_token},
        data="{}",
        content_type="application/json",
    )
    assert still.status_code == 202


def test_rotate_token_refuses_a_non_token_api(open_api):
    with pytest.raises(CommandError, match="does not use token"):
        run_command("rotate_token", "shop", "order", "--yes")


def test_bootstrap_creates_the_admin_and_the_demo_once(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.STATIC_ROOT = tmp_path / "static"
    out = run_command("bootstrap")
    assert "Admin login created: user 'admin'" in out
    assert "demo" in out
    password = (tmp_path / "admin-password.txt").read_text().strip()
    assert oct((tmp_path / "admin-password.txt").stat().st_mode)[-3:] == "600"
    assert password in out
    again = run_command("bootstrap")
    assert password not in again  # printed once; later runs say where it is
    assert "admin-password.txt" in again and "Loaded the demo" not in again
    assert ApiDefinition.objects.filter(module="demo", method="hello").count() == 1


def test_demo_api_greets_the_name_in_the_body(caller, settings, tmp_path):
    settings.VAR_DIR, settings.STATIC_ROOT = tmp_path, tmp_path / "static"
    run_command("bootstrap")
    response = caller.post(
        "/v1/api/demo/hello/async",
        data='{"name":"x"}',
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 202
    drain_queue()
    execution = Execution.objects.get(uid=int(response.json()["response"]["uid"]))
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"greeting": "Hello, x!", "letters": 1}
    assert [run.type for run in execution.step_runs.all()] == ["transform", "code", "output"]


def test_serve_raises_the_open_files_limit_so_its_connection_slots_fit():
    """WEB_BACKPRESSURE (2,048 connections a web process) above a soft limit of
    1,024 descriptors would end in EMFILE first: `serve` raises the soft limit
    toward the hard one (its web processes inherit it), and says when even the
    hard limit is short."""
    code = (
        "import resource\n"
        "from workflows.management.commands.serve import open_files_raise\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4000))\n"
        "print(open_files_raise(2304), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(open_files_raise(9999), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4000:
        pytest.skip("this host's hard limit of open files is under 4,000")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "iolinker.settings"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout.split() == ["None", "2304", "4000", "4000"], done
