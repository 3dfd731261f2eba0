"""Brute force and the per-API rate limit: wrong credentials from one address
are throttled per API (with Retry-After) before any password hash, and calls past
an API's rate limit get 429."""

import time

import pytest

from tests.security.conftest import (
    ATTACKER,
    CALLER,
    PRIVATE,
    RIGHT,
    SECURE,
    WRONG,
    post,
    retry_after,
)
from tests.test_trigger_errors import assert_error
from triggers import throttle
from workflows.models import Execution

pytestmark = pytest.mark.django_db


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
