"""Where a caller may call from: an API's IP allowlist, checked before
credentials on every endpoint, and the caller's address behind trusted proxies."""

import pytest
from django.core.exceptions import ValidationError

from iolinker.env import env_networks
from tests.security.conftest import ATTACKER, CALLER, SECURE, post
from tests.test_trigger_errors import assert_error
from triggers import throttle
from workflows.models import Execution

pytestmark = pytest.mark.django_db


# IP allowlist ----------------------------------------------------------------------


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
