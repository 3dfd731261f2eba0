"""Secrets: credentials are never stored with a run, never logged, never shown
in the admin."""

import json

import pytest

from tests.security.conftest import PRIVATE, SECURE, post
from triggers.services import calls as call_services
from workflows.models import Execution

pytestmark = pytest.mark.django_db


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
