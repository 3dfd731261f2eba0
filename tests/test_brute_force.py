"""Brute force (issue 12, item 8): the admin login is throttled per address and
per username before any password hash; each API has a failure budget over all
addresses together; IPv6 callers are counted per /64."""

import pytest
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.models import User

from tests.security.conftest import ATTACKER, CALLER, PRIVATE, SECURE, post
from tests.test_trigger_errors import assert_error
from triggers import throttle
from triggers.services import auth as auth_services
from workflows.models import Execution

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"


@pytest.fixture
def login_limit(settings):
    settings.IOLINKER_LOGIN_FAILURE_LIMIT = 3
    settings.IOLINKER_LOGIN_FAILURE_WINDOW = 300
    return 3


@pytest.fixture
def staff(db):
    return User.objects.create_user("boss", password="right-pass", is_staff=True)


@pytest.fixture
def hashes(monkeypatch):
    """Counts the slow password hash checks of API passwords."""
    calls = []
    real = auth_services.check_password
    monkeypatch.setattr(auth_services, "check_password", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.fixture
def authentications(monkeypatch):
    """Counts password checks of the admin login (each runs the slow hash)."""
    calls = []
    real = auth_forms.authenticate
    monkeypatch.setattr(
        auth_forms, "authenticate", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    return calls


def login(client, username, password, ip=ATTACKER):
    return client.post(
        LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip
    )


def test_admin_logins_from_one_address_are_throttled_before_the_hash(
    client, staff, login_limit, authentications
):
    for n in range(login_limit):
        response = login(client, f"guess{n}", "wrong")
        assert response.status_code == 200  # the login page with Django's error
    assert len(authentications) == login_limit
    refused = login(client, "boss", "right-pass")  # the right password too: no oracle
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    page = refused.content.decode()
    assert "Too many failed logins" in page and 'name="password"' in page  # the login page
    assert len(authentications) == login_limit  # no hash ran
    assert "_auth_user_id" not in client.session
    # Another address may log in.
    assert login(client, "boss", "right-pass", ip=CALLER).status_code == 302


def test_admin_logins_for_one_username_are_throttled_across_addresses(
    client, staff, login_limit, authentications
):
    for n in range(login_limit):
        assert login(client, "BOSS", "wrong", ip=f"198.51.100.{n + 1}").status_code == 200
    refused = login(client, "boss", "right-pass", ip="198.51.100.200")
    assert refused.status_code == 429
    assert len(authentications) == login_limit
    # Other users are not affected.
    User.objects.create_user("clerk", password="clerk-pass", is_staff=True)
    assert login(client, "clerk", "clerk-pass", ip="198.51.100.201").status_code == 302


def test_an_unreachable_limit_storage_answers_the_login_page_with_503(
    client, staff, login_limit, monkeypatch
):
    from limits.errors import StorageError

    class Down:
        def test(self, *args, **kwargs):
            raise StorageError(ConnectionError("down"))

    monkeypatch.setattr(throttle._Limits, "get", lambda: type("L", (), {"moving": Down()}))
    response = login(client, "boss", "right-pass")
    assert response.status_code == 503
    assert 'name="password"' in response.content.decode()


def test_the_login_throttle_can_be_switched_off(client, staff, settings):
    settings.IOLINKER_LOGIN_FAILURE_LIMIT = 0
    for _ in range(5):
        assert login(client, "boss", "wrong").status_code == 200
    assert login(client, "boss", "right-pass").status_code == 302


# The per-API failure budget ---------------------------------------------------------


@pytest.fixture
def budget(settings):
    settings.IOLINKER_AUTH_FAILURE_LIMIT = 3  # per address
    settings.IOLINKER_AUTH_FAILURE_WINDOW = 300
    settings.IOLINKER_AUTH_FAILURE_API_LIMIT = 5  # all addresses together
    return 5


def spread(n: int) -> list[str]:
    return [f"198.51.100.{i + 1}" for i in range(n)]


def test_wrong_passwords_from_many_addresses_spend_the_apis_budget(
    caller, password_api, budget, hashes
):
    for ip in spread(budget):  # one guess each: no address reaches its own limit
        assert post(caller, PRIVATE, ip=ip, user="alice", password="guess").status_code == 401
    assert len(hashes) == budget
    for ip in spread(budget + 10)[budget:]:
        response = post(caller, PRIVATE, ip=ip, user="alice", password="guess")
        assert_error(response, 429, "requestError.tooManyRequests")
        assert int(response["Retry-After"]) > 0
    # A right password not verified recently is refused too (no oracle), without a hash.
    refused = post(caller, PRIVATE, ip=CALLER, user="alice", password="s3cret-pass")
    assert refused.status_code == 429
    assert len(hashes) == budget
    assert not Execution.objects.exists()


def test_a_recently_verified_caller_keeps_working_while_the_budget_is_spent(
    caller, password_api, budget, hashes
):
    right = {"user": "alice", "password": "s3cret-pass"}
    assert post(caller, PRIVATE, ip=CALLER, **right).status_code == 202
    for ip in spread(budget + 3):
        post(caller, PRIVATE, ip=ip, user="alice", password="guess")
    assert len(hashes) == budget + 1
    assert post(caller, PRIVATE, ip=CALLER, **right).status_code == 202  # from the cache


def test_over_the_budget_refused_attempts_still_count_for_their_address(
    caller, password_api, budget
):
    for ip in spread(budget):
        post(caller, PRIVATE, ip=ip, user="alice", password="guess")
    for _ in range(3):  # the per-address limit, each refused without a hash
        assert post(caller, PRIVATE, ip=ATTACKER, user="alice", password="guess").status_code == 429
    counts = throttle._Limits.get().moving
    item = throttle._failure_item()
    assert counts.test(item, str(password_api.pk), ATTACKER) is False  # its own limit is spent
    assert counts.test(item, str(password_api.pk), CALLER) is True


def test_a_right_token_passes_while_the_budget_is_spent(caller, token_api, budget):
    for ip in spread(budget):
        assert post(caller, SECURE, ip=ip, token="guess").status_code == 401
    assert post(caller, SECURE, ip="198.51.100.99", token="guess").status_code == 429
    assert post(caller, SECURE, ip=CALLER, token=token_api.plain_token).status_code == 202


def test_the_budget_is_per_api(caller, password_api, token_api, budget):
    for ip in spread(budget + 1):
        post(caller, PRIVATE, ip=ip, user="alice", password="guess")
    assert post(caller, SECURE, ip="198.51.100.99", token="guess").status_code == 401


# IPv6 per /64 --------------------------------------------------------------------------


def test_ipv6_callers_are_counted_per_64(caller, password_api, settings, hashes):
    settings.IOLINKER_AUTH_FAILURE_LIMIT = 3
    settings.IOLINKER_AUTH_FAILURE_API_LIMIT = 0
    for host in ("1", "2", "ffff:ffff:ffff:3"):  # three addresses of one /64
        ip = f"2001:db8:1:2::{host}" if ":" not in host else f"2001:db8:1:2:{host}"
        assert post(caller, PRIVATE, ip=ip, user="alice", password="guess").status_code == 401
    refused = post(caller, PRIVATE, ip="2001:db8:1:2::99", user="alice", password="s3cret-pass")
    assert refused.status_code == 429
    assert len(hashes) == 3
    # The next /64 is another caller.
    ok = post(caller, PRIVATE, ip="2001:db8:1:3::1", user="alice", password="s3cret-pass")
    assert ok.status_code == 202
    assert throttle.counted_address("2001:db8:1:2::99") == "2001:db8:1:2::/64"
    assert throttle.counted_address("::ffff:203.0.113.9") == "203.0.113.9"
