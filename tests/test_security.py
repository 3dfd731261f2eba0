"""Security promises (docs/reliability.md, "Security"): who may call an API
from where and how often, whose runs a credential reaches, what is never
stored or shown, and the web protections."""

import json
import os
import subprocess
import sys
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from iolinker.env import env_networks
from tests.conftest import make_api, make_workflow
from tests.support.environment import BASE_DIR
from tests.support.queue import queue_is_redis
from tests.test_admin_engine import workflow_form
from tests.test_trigger_errors import assert_error
from triggers import services, throttle
from triggers.models import ApiDefinition, AuthMode
from triggers.services import auth as auth_services
from triggers.services import calls as call_services
from workflows.models import Execution, Workflow

pytestmark = pytest.mark.django_db

ATTACKER = "198.51.100.66"
CALLER = "203.0.113.9"


def post(caller, path, *, ip=CALLER, **headers):
    return caller.post(
        path, data="{}", content_type="application/json", headers=headers, REMOTE_ADDR=ip
    )


def retry_after(response) -> int:
    return int(response["Retry-After"])


@pytest.fixture
def failure_limit(settings):
    settings.IOLINKER_AUTH_FAILURE_LIMIT = 3
    settings.IOLINKER_AUTH_FAILURE_WINDOW = 300
    return 3


@pytest.fixture
def hashes(monkeypatch):
    """Counts the slow password hash checks."""
    calls = []
    real = auth_services.check_password
    monkeypatch.setattr(auth_services, "check_password", lambda *a: calls.append(1) or real(*a))
    return calls


PRIVATE = "/v1/api/shop/private/async"
SECURE = "/v1/api/shop/secure/async"
RIGHT = {"user": "alice", "password": "s3cret-pass"}
WRONG = {"user": "alice", "password": "guess"}


# Brute force ---------------------------------------------------------------------


def test_wrong_passwords_from_one_address_are_throttled_with_retry_after(
    caller, password_api, failure_limit, hashes
):
    for _ in range(failure_limit):
        assert_error(post(caller, PRIVATE, ip=ATTACKER, **WRONG), 401, "requestError.unauthorized")
    refused = post(caller, PRIVATE, ip=ATTACKER, **WRONG)
    assert_error(refused, 429, "requestError.tooManyRequests")
    assert 1 <= retry_after(refused) <= 300
    # The refused attempt ran no slow hash: a flood of guesses costs no CPU.
    assert len(hashes) == failure_limit
    for _ in range(5):
        assert post(caller, PRIVATE, ip=ATTACKER, **WRONG).status_code == 429
    assert len(hashes) == failure_limit


def test_a_throttled_address_is_refused_even_with_the_right_password(
    caller, password_api, failure_limit, hashes
):
    # Otherwise 429 for a wrong guess and 202 for the right one would still
    # answer the guesser at full speed.
    for _ in range(failure_limit + 1):
        post(caller, PRIVATE, ip=ATTACKER, **WRONG)
    before = len(hashes)
    assert_error(post(caller, PRIVATE, ip=ATTACKER, **RIGHT), 429, "requestError.tooManyRequests")
    assert len(hashes) == before
    assert not Execution.objects.exists()


def test_the_right_caller_from_another_address_is_not_locked_out(
    caller, password_api, failure_limit
):
    for _ in range(failure_limit + 1):
        post(caller, PRIVATE, ip=ATTACKER, **WRONG)
    assert post(caller, PRIVATE, ip=CALLER, **RIGHT).status_code == 202
    # ... and that address has its own count of failures.
    assert_error(post(caller, PRIVATE, ip=CALLER, **WRONG), 401, "requestError.unauthorized")


def test_the_throttle_is_per_api(caller, password_api, token_api, failure_limit):
    for _ in range(failure_limit + 1):
        post(caller, PRIVATE, ip=ATTACKER, **WRONG)
    response = post(caller, SECURE, ip=ATTACKER, token=token_api.plain_token)
    assert response.status_code == 202


def test_wrong_tokens_are_throttled_too(caller, token_api, failure_limit):
    for _ in range(failure_limit):
        response = post(caller, SECURE, ip=ATTACKER, token="guess")
        assert_error(response, 401, "requestError.unauthorized")
    refused = post(caller, SECURE, ip=ATTACKER, token="guess")
    assert_error(refused, 429, "requestError.tooManyRequests")
    assert retry_after(refused) >= 1
    assert post(caller, SECURE, ip=CALLER, token=token_api.plain_token).status_code == 202


def test_missing_credentials_are_not_counted_as_failures(caller, token_api, failure_limit):
    for _ in range(failure_limit * 2):
        assert_error(post(caller, SECURE, ip=CALLER), 401, "requestError.invalidParams")
    assert post(caller, SECURE, ip=CALLER, token=token_api.plain_token).status_code == 202


def test_the_block_ends_when_the_window_passes(
    caller, password_api, failure_limit, monkeypatch, hashes
):
    for _ in range(failure_limit + 1):
        post(caller, PRIVATE, ip=ATTACKER, **WRONG)
    assert post(caller, PRIVATE, ip=ATTACKER, **RIGHT).status_code == 429
    later = time.time() + 301
    monkeypatch.setattr(time, "time", lambda: later)
    assert post(caller, PRIVATE, ip=ATTACKER, **RIGHT).status_code == 202


def test_a_process_that_learns_of_the_block_from_the_storage_runs_no_hash(
    caller, password_api, failure_limit, hashes
):
    for _ in range(failure_limit + 1):
        post(caller, PRIVATE, ip=ATTACKER, **WRONG)
    # Another web process shares the counters (Redis) but not this process's
    # dict of blocked addresses: it asks the storage before hashing.
    throttle._Blocked.until = {}
    before = len(hashes)
    assert_error(post(caller, PRIVATE, ip=ATTACKER, **WRONG), 429, "requestError.tooManyRequests")
    assert len(hashes) == before
    assert throttle._Blocked.until  # ... and from then on knows it without asking


def test_status_and_cancel_share_the_throttle(caller, token_api, failure_limit):
    uid = post(caller, SECURE, ip=CALLER, token=token_api.plain_token).json()["response"]["uid"]
    status = f"/v1/api/shop/secure/executions/{uid}"
    for _ in range(failure_limit):
        response = caller.get(status, headers={"token": "guess"}, REMOTE_ADDR=ATTACKER)
        assert_error(response, 401, "requestError.unauthorized")
    response = caller.get(status, headers={"token": "guess"}, REMOTE_ADDR=ATTACKER)
    assert_error(response, 429, "requestError.tooManyRequests")
    cancel = caller.post(
        status + "/cancel", headers={"token": token_api.plain_token}, REMOTE_ADDR=ATTACKER
    )
    assert_error(cancel, 429, "requestError.tooManyRequests")
    assert post(caller, SECURE, ip=ATTACKER, token=token_api.plain_token).status_code == 429
    ok = caller.get(status, headers={"token": token_api.plain_token}, REMOTE_ADDR=CALLER)
    assert ok.status_code == 200


def test_the_throttle_can_be_switched_off(caller, token_api, settings):
    settings.IOLINKER_AUTH_FAILURE_LIMIT = 0
    for _ in range(20):
        assert post(caller, SECURE, ip=ATTACKER, token="guess").status_code == 401


# Per-API rate limit ----------------------------------------------------------------


def test_calls_past_the_rate_limit_get_429_with_retry_after(caller, token_api):
    token_api.rate_limit, token_api.rate_limit_period = 2, "minute"
    token_api.save()
    for _ in range(2):
        assert post(caller, SECURE, token=token_api.plain_token).status_code == 202
    refused = post(caller, SECURE, token=token_api.plain_token)
    assert_error(refused, 429, "requestError.tooManyRequests")
    assert 1 <= retry_after(refused) <= 60
    assert Execution.objects.count() == 2
    # All callers together: another address is refused as well.
    assert post(caller, SECURE, ip=ATTACKER, token=token_api.plain_token).status_code == 429


def test_callers_without_credentials_do_not_use_up_the_rate_limit(caller, token_api):
    token_api.rate_limit, token_api.rate_limit_period = 1, "hour"
    token_api.save()
    for _ in range(3):
        assert post(caller, SECURE, ip=ATTACKER, token="guess").status_code == 401
    assert post(caller, SECURE, token=token_api.plain_token).status_code == 202


def test_the_rate_limit_is_per_api(caller, token_api, open_api):
    token_api.rate_limit, token_api.rate_limit_period = 1, "minute"
    token_api.save()
    assert post(caller, SECURE, token=token_api.plain_token).status_code == 202
    assert post(caller, SECURE, token=token_api.plain_token).status_code == 429
    assert post(caller, "/v1/api/shop/order/async").status_code == 202


def test_the_rate_limit_per_second_lets_the_next_second_through(caller, open_api):
    open_api.rate_limit, open_api.rate_limit_period = 1, "second"
    open_api.save()
    assert post(caller, "/v1/api/shop/order/async").status_code == 202
    refused = post(caller, "/v1/api/shop/order/async")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "1"
    # Really wait: with Redis the window is kept by the server's clock.
    time.sleep(2.05)
    assert post(caller, "/v1/api/shop/order/async").status_code == 202


# IP allowlist ----------------------------------------------------------------------


@pytest.fixture
def listed_api(token_api):
    token_api.ip_allowlist = "203.0.113.0/24,\n2001:db8::/32"
    token_api.save()
    return token_api


@pytest.mark.parametrize(
    "ip", ["203.0.113.9", "203.0.113.250", "2001:db8::1", "::ffff:203.0.113.9"]
)
def test_an_allowlisted_address_may_call(caller, listed_api, ip):
    assert post(caller, SECURE, ip=ip, token=listed_api.plain_token).status_code == 202


@pytest.mark.parametrize("ip", ["198.51.100.66", "203.0.114.1", "2001:db9::1", "", "bogus"])
def test_other_addresses_get_403_ip_not_allowed(caller, listed_api, ip):
    response = post(caller, SECURE, ip=ip, token=listed_api.plain_token)
    assert_error(response, 403, "requestError.ipNotAllowed")
    assert not Execution.objects.exists()


def test_the_allowlist_is_checked_before_credentials(caller, listed_api, failure_limit):
    for _ in range(failure_limit + 2):
        response = post(caller, SECURE, ip=ATTACKER, token="guess")
        assert_error(response, 403, "requestError.ipNotAllowed")
    # Nothing was counted against the address: it learns nothing about credentials.
    assert not throttle._Blocked.until


def test_the_allowlist_holds_for_status_and_cancel(caller, listed_api):
    uid = post(caller, SECURE, token=listed_api.plain_token).json()["response"]["uid"]
    status = f"/v1/api/shop/secure/executions/{uid}"
    headers = {"token": listed_api.plain_token}
    assert caller.get(status, headers=headers, REMOTE_ADDR=CALLER).status_code == 200
    response = caller.get(status, headers=headers, REMOTE_ADDR=ATTACKER)
    assert_error(response, 403, "requestError.ipNotAllowed")
    response = caller.post(status + "/cancel", headers=headers, REMOTE_ADDR=ATTACKER)
    assert_error(response, 403, "requestError.ipNotAllowed")


def test_sync_calls_get_the_same_checks(caller, listed_api, failure_limit):
    listed_api.sync_enabled, listed_api.rate_limit = True, 1
    listed_api.save()
    sync = "/v1/api/shop/secure/sync"
    response = post(caller, sync, ip=ATTACKER, token=listed_api.plain_token)
    assert_error(response, 403, "requestError.ipNotAllowed")
    for _ in range(failure_limit):
        assert post(caller, sync, token="guess").status_code == 401
    assert_error(post(caller, sync, token="guess"), 429, "requestError.tooManyRequests")
    other = "203.0.113.10"
    assert post(caller, SECURE, ip=other, token=listed_api.plain_token).status_code == 202
    response = post(caller, sync, ip=other, token=listed_api.plain_token)
    assert_error(response, 429, "requestError.tooManyRequests")  # the rate limit, shared


@pytest.mark.parametrize("text", ["10.0.0.0/33", "example.com", "10.0.0.1, nope"])
def test_the_admin_refuses_a_malformed_allowlist(listed_api, text):
    listed_api.ip_allowlist = text
    with pytest.raises(ValidationError) as info:
        listed_api.full_clean()
    assert "ip_allowlist" in info.value.message_dict


# The caller's address behind proxies -----------------------------------------------


@pytest.fixture
def proxies(settings):
    settings.IOLINKER_TRUSTED_PROXIES = env_networks("P", environ={"P": "10.0.0.0/8, fd00::/8"})


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),
        # A caller may write anything left of what our proxy appended.
        ("10.0.0.5", "1.1.1.1, 203.0.113.9", "203.0.113.9"),
        ("10.0.0.5", "203.0.113.9, 10.0.0.7", "203.0.113.9"),
        ("10.0.0.5", " 203.0.113.9 ,10.1.2.3 , 10.0.0.7", "203.0.113.9"),
        ("10.0.0.5", "garbage, 10.0.0.7", "10.0.0.7"),
        ("10.0.0.5", "10.0.0.8, 10.0.0.7", "10.0.0.8"),
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        # From a peer that is not a trusted proxy the header is the caller's own words.
        ("198.51.100.66", "203.0.113.9", "198.51.100.66"),
    ],
)
def test_client_ip_believes_only_trusted_proxies(proxies, peer, forwarded, expected):
    assert throttle.client_ip(remote_addr=peer, forwarded_for=forwarded) == expected


def test_without_trusted_proxies_forwarded_for_is_ignored():
    assert throttle.client_ip(remote_addr="10.0.0.5", forwarded_for="203.0.113.9") == "10.0.0.5"


def test_behind_a_trusted_proxy_the_forwarded_address_is_checked(caller, listed_api, proxies):
    token = listed_api.plain_token
    via_proxy = {"ip": "10.0.0.5", "token": token}
    assert post(caller, SECURE, **via_proxy, x_forwarded_for=CALLER).status_code == 202
    spoofed = post(caller, SECURE, **via_proxy, x_forwarded_for=f"{CALLER}, {ATTACKER}")
    assert_error(spoofed, 403, "requestError.ipNotAllowed")
    direct = post(caller, SECURE, ip=ATTACKER, token=token, x_forwarded_for=CALLER)
    assert_error(direct, 403, "requestError.ipNotAllowed")


def test_behind_a_trusted_proxy_failures_count_per_forwarded_address(
    caller, token_api, proxies, failure_limit
):
    for _ in range(failure_limit + 1):
        post(caller, SECURE, ip="10.0.0.5", token="guess", x_forwarded_for=ATTACKER)
    right = {"ip": "10.0.0.5", "token": token_api.plain_token}
    assert post(caller, SECURE, **right, x_forwarded_for=CALLER).status_code == 202
    assert post(caller, SECURE, **right, x_forwarded_for=ATTACKER).status_code == 429


# Cost on the hot path ----------------------------------------------------------------


def test_a_right_caller_of_an_api_with_an_allowlist_costs_no_extra_query(
    caller, listed_api, django_assert_num_queries
):
    token = listed_api.plain_token
    post(caller, SECURE, token=token)  # leases the uid number, caches the API
    one_statement = queue_is_redis() or connection.vendor == "postgresql"
    with django_assert_num_queries(1 if one_statement else 4):
        assert post(caller, SECURE, token=token).status_code == 202


def test_the_storage_is_not_touched_by_a_right_caller_without_limits(
    caller, token_api, monkeypatch
):
    post(caller, SECURE, token=token_api.plain_token)
    monkeypatch.setattr(throttle._Limits, "get", lambda: pytest.fail("storage used"))
    assert post(caller, SECURE, token=token_api.plain_token).status_code == 202


def test_an_unreachable_limit_storage_answers_503(caller, token_api, monkeypatch):
    from limits.errors import StorageError

    class Down:
        def hit(self, *args, **kwargs):
            raise StorageError(ConnectionError("down"))

    token_api.rate_limit = 5
    token_api.save()
    monkeypatch.setattr(throttle._Limits, "get", lambda: type("L", (), {"sliding": Down()}))
    response = post(caller, SECURE, token=token_api.plain_token)
    assert_error(response, 503, "serverError.unavailable")
    assert not Execution.objects.exists()


def test_open_api_needs_no_throttle(caller, echo_workflow, failure_limit):
    make_api(echo_workflow, method="free", auth_mode=AuthMode.NONE)
    for _ in range(failure_limit + 2):
        assert post(caller, "/v1/api/shop/free/async", ip=ATTACKER).status_code == 202


# Isolation: code steps need their own admin permission ------------------------------

CODE = {"key": "calc", "type": "code", "config": {"code": "return {'n': 1}"}}
TRANSFORM = {"key": "shape", "type": "transform", "config": {"value": 1}}


def staff_client(client, *codenames: str):
    user = User.objects.create_user("editor", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


EDITOR = ["add_workflow", "change_workflow", "view_workflow", "add_step", "change_step"]
EDITOR += ["delete_step", "view_step", "view_workflowversion"]


@pytest.fixture
def editor(client):
    """A staff user who may edit workflows but not code steps."""
    return staff_client(client, *EDITOR)


@pytest.fixture
def coder(client):
    return staff_client(client, *EDITOR, "change_code_step")


def existing_step_form(workflow, **changes) -> dict:
    """The change form of ``workflow`` as the admin renders it, with ``changes``."""
    steps = list(workflow.steps.order_by("position"))
    data = workflow_form(workflow.name, [{} for _ in steps])
    data["steps-INITIAL_FORMS"] = str(len(steps))
    for i, step in enumerate(steps):
        values = {
            "id": step.pk,
            "workflow": workflow.pk,
            "position": step.position,
            "key": step.key,
            "type": step.type,
            "config": json.dumps(step.config),
            "next": step.next,
            "on_error": step.on_error,
            "error_next": step.error_next,
            "retries": step.retries,
            "retry_interval": step.retry_interval,
            "retry_backoff": step.retry_backoff,
            "timeout": step.timeout or "",
        }
        values.update(changes.get(step.key, {}))
        data.update({f"steps-{i}-{name}": str(value) for name, value in values.items()})
    return data


def test_an_editor_without_the_permission_cannot_add_a_code_step(editor):
    response = editor.post("/admin/workflows/workflow/add/", workflow_form("wf", [CODE]))
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="wf").exists()


def test_an_editor_without_the_permission_cannot_give_a_code_step_the_network(editor):
    workflow = make_workflow("wf", [("calc", "code", {"code": "return 1"})])
    change = {"config": '{"code": "return 1", "network": true}'}
    response = editor.post(
        f"/admin/workflows/workflow/{workflow.pk}/change/",
        existing_step_form(workflow, calc=change),
    )
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert workflow.steps.get().config == {"code": "return 1"}


def test_an_editor_without_the_permission_cannot_hide_a_code_step_in_a_loop(editor):
    loop = {"key": "each", "type": "loop", "config": {"items": "{{ body.items }}", "steps": [CODE]}}
    response = editor.post("/admin/workflows/workflow/add/", workflow_form("wf", [loop]))
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="wf").exists()
    document = {"format": "iolinker.workflow", "formatVersion": 1, "name": "imp", "steps": [loop]}
    upload = SimpleUploadedFile("wf.json", json.dumps(document).encode())
    response = editor.post("/admin/workflows/workflow/import/", {"file": upload})
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="imp").exists()


def test_an_editor_without_the_permission_may_add_other_steps(editor):
    response = editor.post("/admin/workflows/workflow/add/", workflow_form("wf", [TRANSFORM]))
    assert response.status_code == 302
    assert Workflow.objects.get(name="wf").steps.get().type == "transform"


def test_an_editor_without_the_permission_cannot_change_a_code_step(editor):
    workflow = make_workflow("wf", [("calc", "code", {"code": "return 1"})])
    page = f"/admin/workflows/workflow/{workflow.pk}/change/"
    # Saving it untouched (other fields may change) is allowed ...
    data = existing_step_form(workflow)
    data["description"] = "edited"
    assert editor.post(page, data).status_code == 302
    # ... changing its code, or its type, is not.
    for change in ({"config": '{"code": "return 2"}'}, {"type": "transform"}):
        response = editor.post(page, existing_step_form(workflow, calc=change))
        assert response.status_code == 200
        assert "Can add or change code steps" in response.content.decode()
    assert workflow.steps.get().config == {"code": "return 1"}


def test_the_permission_allows_code_steps(coder):
    response = coder.post("/admin/workflows/workflow/add/", workflow_form("wf", [CODE]))
    assert response.status_code == 302
    assert Workflow.objects.get(name="wf").steps.get().type == "code"


def test_an_editor_without_the_permission_cannot_import_code_steps(editor):
    document = {"format": "iolinker.workflow", "formatVersion": 1, "name": "imp", "steps": [CODE]}
    upload = SimpleUploadedFile("wf.json", json.dumps(document).encode())
    response = editor.post("/admin/workflows/workflow/import/", {"file": upload})
    assert response.status_code == 200
    assert "Can add or change code steps" in response.content.decode()
    assert not Workflow.objects.filter(name="imp").exists()


def test_a_viewer_sees_runs_but_cannot_change_workflows(client, open_api):
    viewer = staff_client(client, "view_execution", "view_steprun", "view_workflow")
    assert viewer.get("/admin/workflows/execution/").status_code == 200
    page = f"/admin/workflows/workflow/{open_api.workflow.pk}/change/"
    assert viewer.get(page).status_code == 200  # read-only view
    data = existing_step_form(open_api.workflow)
    data["description"] = "edited"
    assert viewer.post(page, data).status_code == 403
    assert viewer.get("/admin/triggers/apidefinition/").status_code == 403


# Secrets: never stored with a run, never logged, never shown --------------------------

SECRETS = {
    "token": "tok-SECRET-1",
    "password": "pw-SECRET-2",
    "authorization": "Bearer SECRET-3",
    "proxy-authorization": "Basic SECRET-4",
    "cookie": "sessionid=SECRET-5",
    "x-api-key": "SECRET-6",
}


def test_credential_headers_are_never_stored_in_a_run(caller, open_api, settings):
    # Even when an operator lists them as headers to keep.
    settings.IOLINKER_TRIGGER_HEADERS = frozenset({*SECRETS, "user-agent"})
    response = post(caller, "/v1/api/shop/order/async", user_agent="probe/1", **SECRETS)
    assert response.status_code == 202
    stored = Execution.objects.get().input
    assert stored["headers"] == {"user-agent": "probe/1"}
    assert all(secret not in json.dumps(stored) for secret in SECRETS.values())


def test_credentials_are_never_logged(caller, token_api, password_api, caplog, monkeypatch):
    caplog.set_level("DEBUG")
    post(caller, SECURE, token="tok-SECRET-1")  # wrong token
    post(caller, PRIVATE, user="alice", password="pw-SECRET-2")  # wrong password
    post(caller, SECURE, token=token_api.plain_token)  # right one
    # An unexpected error is logged with its traceback: still no credential.
    monkeypatch.setattr(call_services, "execution_queue", lambda **kw: 1 / 0)
    response = post(caller, PRIVATE, user="alice", password="s3cret-pass", authorization="SECRET-3")
    assert response.status_code == 500
    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    logged += caplog.text
    assert "Unhandled error" in logged
    for secret in ("tok-SECRET-1", "pw-SECRET-2", "s3cret-pass", "SECRET-3", token_api.plain_token):
        assert secret not in logged


def test_the_admin_never_shows_a_stored_secret(admin_client, token_api, password_api):
    password_api.refresh_from_db()
    for api, stored in [
        (token_api, token_api.token_hash),
        (password_api, password_api.password_hash),
    ]:
        html = admin_client.get(f"/admin/triggers/apidefinition/{api.pk}/change/").content.decode()
        assert "stored hashed" in html
        assert stored not in html
        assert "s3cret-pass" not in html
    listing = admin_client.get("/admin/triggers/apidefinition/").content.decode()
    assert token_api.plain_token not in listing


# Web: CSRF, cookies, security headers, deploy checks -------------------------------


def test_admin_pages_need_a_login(client):
    response = client.get("/admin/triggers/apidefinition/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_admin_forms_enforce_csrf(admin_user, echo_workflow):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    data = {"name": "x", "description": "", "steps-TOTAL_FORMS": "0"}
    response = browser.post("/admin/workflows/workflow/add/", data)
    assert response.status_code == 403
    assert not Workflow.objects.filter(name="x").exists()
    # With the token from the form, the same post goes through to validation.
    page = browser.get("/admin/workflows/workflow/add/")
    data["csrfmiddlewaretoken"] = page.context["csrf_token"]
    assert browser.post("/admin/workflows/workflow/add/", data).status_code != 403


def test_trigger_endpoints_are_csrf_exempt_even_with_a_session(admin_user, token_api):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)  # a session cookie, no CSRF token
    response = post(browser, SECURE, token=token_api.plain_token)
    assert response.status_code == 202
    location = response["Location"]
    headers = {"token": token_api.plain_token}
    assert browser.post(location + "/cancel", headers=headers).status_code == 200


def assert_cookieless(response):
    assert not response.cookies
    assert not response.has_header("Set-Cookie")


def test_public_endpoints_never_set_cookies(caller, token_api, admin_user):
    response = post(caller, SECURE, token=token_api.plain_token)
    assert_cookieless(response)
    location, headers = response["Location"], {"token": token_api.plain_token}
    assert_cookieless(caller.get(location, headers=headers))
    assert_cookieless(caller.post(location + "/cancel", headers=headers))
    assert_cookieless(caller.get("/v1/openapi.json"))
    assert_cookieless(post(caller, SECURE, token="wrong"))
    assert_cookieless(caller.get("/v1/nowhere"))


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def test_public_answers_carry_the_security_headers(caller, token_api):
    response = post(caller, SECURE, token=token_api.plain_token)
    others = [
        response,
        caller.get(response["Location"], headers={"token": token_api.plain_token}),
        caller.get("/v1/openapi.json"),
        post(caller, SECURE, token="wrong"),
    ]
    for answer in others:
        for name, value in SECURITY_HEADERS.items():
            assert answer[name] == value
        assert not answer.has_header("Strict-Transport-Security")  # not over plain HTTP


@pytest.fixture
def https(settings):
    """What IOLINKER_HTTPS=1 sets (behind a TLS proxy that sets X-Forwarded-Proto)."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True


def test_answers_over_https_carry_hsts(caller, token_api, https):
    hsts = "max-age=31536000; includeSubDomains"
    secure = post(caller, SECURE, token=token_api.plain_token, x_forwarded_proto="https")
    assert secure.status_code == 202
    assert secure["Strict-Transport-Security"] == hsts
    error = post(caller, SECURE, token="wrong", x_forwarded_proto="https")
    assert error["Strict-Transport-Security"] == hsts
    plain = post(caller, SECURE, token=token_api.plain_token, x_forwarded_proto="http")
    assert not plain.has_header("Strict-Transport-Security")


def test_django_answers_over_https_carry_hsts(client, https):
    response = client.get("/v1/openapi.json", headers={"x-forwarded-proto": "https"})
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def _check_deploy(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOLINKER_")}
    environ.update(IOLINKER_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_the_production_configuration(tmp_path):
    result = _check_deploy(
        tmp_path,
        DEBUG="0",
        SECRET_KEY="x" * 10 + "".join(chr(65 + i % 26) for i in range(60)),
        IOLINKER_HTTPS="1",
        ALLOWED_HOSTS="iolinker.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_configuration_without_https(tmp_path):
    result = _check_deploy(tmp_path, DEBUG="1", ALLOWED_HOSTS="iolinker.example.com")
    assert result.returncode != 0
    for check in ("security.W004", "security.W012", "security.W016", "security.W018"):
        assert check in result.stderr + result.stdout


def test_malformed_trusted_proxies_are_refused_at_start_up():
    with pytest.raises(ImproperlyConfigured):
        env_networks("P", environ={"P": "10.0.0.0/8, proxy.local"})


def test_view_only_staff_cannot_use_the_actions_that_change_or_run(client, token_api):
    viewer = staff_client(
        client, "view_apidefinition", "view_execution", "view_workflow", "view_steprun"
    )
    old_hash = ApiDefinition.objects.get(pk=token_api.pk).token_hash
    viewer.post(
        "/admin/triggers/apidefinition/",
        {"action": "rotate_tokens", "_selected_action": [token_api.pk]},
    )
    viewer.post(
        "/admin/triggers/apidefinition/",
        {"action": "disable_apis", "_selected_action": [token_api.pk]},
    )
    api = ApiDefinition.objects.get(pk=token_api.pk)
    assert api.token_hash == old_hash and api.enabled  # found by review: they worked
    viewer.post(
        "/admin/workflows/workflow/",
        {"action": "clone_selected", "_selected_action": [token_api.workflow.pk]},
    )
    assert Workflow.objects.count() == 1
    uid = services.api_call(
        module=token_api.module,
        method=token_api.method,
        call=services.TriggerCall(http_method="POST", headers={}, query={}, read_body=dict),
        authenticate=False,
    ).uid
    response = viewer.post(f"/admin/workflows/execution/{uid}/rerun/")
    assert response.status_code == 403
    assert not Execution.objects.filter(rerun_of=uid).exists()
