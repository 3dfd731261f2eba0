"""What the security checks cost a right caller on the hot path: no extra
query, no limit storage touched, and 503 when that storage is unreachable."""

import pytest
from django.db import connection

from tests.conftest import make_api
from tests.security.conftest import ATTACKER, SECURE, post
from tests.support.queue import queue_is_redis
from tests.test_trigger_errors import assert_error
from triggers import throttle
from triggers.models import AuthMode
from workflows.models import Execution

pytestmark = pytest.mark.django_db


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
