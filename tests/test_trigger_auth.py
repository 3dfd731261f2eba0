"""Caller authentication: none, token (header `token`), user + password."""

import pytest
from django.core.cache import caches

from tests.test_trigger_errors import assert_error
from triggers import services
from triggers.models import ApiDefinition
from triggers.services import auth as auth_services
from workflows.models import Execution

pytestmark = pytest.mark.django_db


def post(caller, path, **headers):
    return caller.post(path, data="{}", content_type="application/json", headers=headers)


def test_open_api_needs_no_credentials(caller, open_api):
    assert post(caller, "/v1/api/shop/order/async").status_code == 202


def test_right_token_is_accepted(caller, token_api):
    assert post(caller, "/v1/api/shop/secure/async", token=token_api.plain_token).status_code == 202


def test_missing_token_is_401_token_required(caller, token_api):
    error = assert_error(
        post(caller, "/v1/api/shop/secure/async"), 401, "requestError.invalidParams"
    )
    assert error["message"] == "Token is required"


def test_wrong_token_is_401_unauthorized(caller, token_api):
    response = post(caller, "/v1/api/shop/secure/async", token=token_api.plain_token + "x")
    assert_error(response, 401, "requestError.unauthorized")
    assert not Execution.objects.exists()


def test_token_is_stored_hashed_only(token_api):
    stored = ApiDefinition.objects.filter(pk=token_api.pk).values().get()
    assert token_api.plain_token not in str(stored)
    assert len(token_api.plain_token) >= 40


def test_rotated_token_replaces_the_old_one(caller, token_api):
    new_token = services.api_set_token(api=token_api)
    assert post(caller, "/v1/api/shop/secure/async", token=new_token).status_code == 202
    old = post(caller, "/v1/api/shop/secure/async", token=token_api.plain_token)
    assert_error(old, 401, "requestError.unauthorized")


def test_right_user_and_password_are_accepted(caller, password_api):
    response = post(caller, "/v1/api/shop/private/async", user="alice", password="s3cret-pass")
    assert response.status_code == 202


@pytest.mark.parametrize(
    "headers", [{}, {"user": "alice"}, {"password": "s3cret-pass"}, {"user": "", "password": "x"}]
)
def test_missing_user_or_password_is_401_required(caller, password_api, headers):
    error = assert_error(
        post(caller, "/v1/api/shop/private/async", **headers), 401, "requestError.invalidParams"
    )
    assert error["message"] == "User/Password is required"


@pytest.mark.parametrize(
    "user,password", [("alice", "wrong"), ("bob", "s3cret-pass"), ("Alice", "s3cret-pass")]
)
def test_wrong_user_or_password_is_401_unauthorized(caller, password_api, user, password):
    response = post(caller, "/v1/api/shop/private/async", user=user, password=password)
    assert_error(response, 401, "requestError.unauthorized")


def test_password_is_stored_with_a_slow_salted_hash(password_api):
    stored = ApiDefinition.objects.filter(pk=password_api.pk).values().get()
    assert "s3cret-pass" not in str(stored)
    assert stored["password_hash"].startswith("pbkdf2_sha256$")


def test_verified_password_is_cached_so_the_slow_hash_runs_once(caller, password_api, monkeypatch):
    calls = []
    real_check = auth_services.check_password
    monkeypatch.setattr(
        auth_services, "check_password", lambda *a: calls.append(1) or real_check(*a)
    )
    for _ in range(5):
        response = post(caller, "/v1/api/shop/private/async", user="alice", password="s3cret-pass")
        assert response.status_code == 202
    assert len(calls) == 1


def test_changed_password_invalidates_the_cached_credential(caller, password_api):
    assert (
        post(caller, "/v1/api/shop/private/async", user="alice", password="s3cret-pass").status_code
        == 202
    )
    # Another process (or the admin) changes the password; this process reloads the API.
    services.api_set_password(api=password_api, user="alice", password="n3w-pass-word")
    old = post(caller, "/v1/api/shop/private/async", user="alice", password="s3cret-pass")
    assert_error(old, 401, "requestError.unauthorized")
    new = post(caller, "/v1/api/shop/private/async", user="alice", password="n3w-pass-word")
    assert new.status_code == 202


def test_changed_user_invalidates_the_cached_credential(caller, password_api):
    ok = post(caller, "/v1/api/shop/private/async", user="alice", password="s3cret-pass")
    assert ok.status_code == 202
    password_api.auth_user = "bob"
    password_api.save()
    stale = post(caller, "/v1/api/shop/private/async", user="alice", password="s3cret-pass")
    assert_error(stale, 401, "requestError.unauthorized")


def test_utf8_credentials_work(caller, password_api):
    services.api_set_password(api=password_api, user="zoë", password="pässwörd-ünïcode")
    # A real client sends the UTF-8 bytes; WSGI hands them over as latin-1 text.
    latin1 = {
        "HTTP_USER": "zoë".encode().decode("latin-1"),
        "HTTP_PASSWORD": "pässwörd-ünïcode".encode().decode("latin-1"),
    }
    response = caller.post(
        "/v1/api/shop/private/async", data="{}", content_type="application/json", **latin1
    )
    assert response.status_code == 202


def test_cache_holds_no_plain_password(caller, password_api):
    post(caller, "/v1/api/shop/private/async", user="alice", password="s3cret-pass")
    cache = caches["credentials"]
    assert all("s3cret-pass" not in str(key) for key in cache._cache)


def test_wrong_password_is_never_cached(caller, password_api):
    for _ in range(2):
        post(caller, "/v1/api/shop/private/async", user="alice", password="wrong")
    assert len(caches["credentials"]._cache) == 0
