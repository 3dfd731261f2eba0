"""The web protections: admin logins and CSRF, no cookies on public endpoints,
security headers and HSTS, `check --deploy` in production, view-only staff
kept from the actions that change or run."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from iolinker.env import env_networks
from tests.security.conftest import SECURE, post, staff_client
from tests.support.environment import BASE_DIR
from triggers import services
from triggers.models import ApiDefinition
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


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
