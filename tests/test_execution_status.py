"""A run's status and result: GET /v1/api/<module>/<method>/executions/<uid>."""

import threading
import time
from datetime import datetime
from urllib.parse import quote

import pytest
from django.db import connection

from tests.conftest import make_api, make_workflow
from tests.support.queue import drain_queue
from triggers.models import AuthMode

pytestmark = pytest.mark.django_db

JSON = "application/json"


def trigger(caller, path="/v1/api/shop/order", **headers):
    response = caller.post(f"{path}/async", data='{"n": 2}', content_type=JSON, headers=headers)
    assert response.status_code == 202, response.content
    return response


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == JSON
    assert response.json()["response"]["error"]["code"] == code


def test_location_answers_the_status_while_queued_and_the_result_once_finished(caller, open_api):
    accepted = trigger(caller)
    uid = accepted.json()["response"]["uid"]
    queued = caller.get(accepted["Location"])
    assert queued.status_code == 200
    body = queued.json()["response"]
    assert body == {
        "uid": uid,
        "status": "queued",
        "data": None,
        "code": 0,
        "msg": "",
        "createdAt": body["createdAt"],
        "startedAt": None,
        "finishedAt": None,
    }
    assert datetime.fromisoformat(body["createdAt"]).tzinfo is not None

    drain_queue()
    done = caller.get(accepted["Location"]).json()["response"]
    assert done["status"] == "succeeded"
    assert (done["code"], done["msg"]) == (0, "")
    assert done["data"] == {"body": {"n": 2}, "query": {}, "method": "POST"}
    assert done["createdAt"] <= done["startedAt"] <= done["finishedAt"]


def test_a_failed_run_has_a_non_zero_code_and_a_readable_message(caller):
    workflow = make_workflow("fails", [("boom", "code", {"code": "raise ValueError('no stock')"})])
    make_api(workflow, auth_mode=AuthMode.NONE)
    accepted = trigger(caller)
    drain_queue()
    body = caller.get(accepted["Location"]).json()["response"]
    assert body["status"] == "failed"
    assert body["code"] == 1
    assert "no stock" in body["msg"] and "boom" in body["msg"]


def test_status_needs_the_api_credentials(caller, token_api):
    accepted = trigger(caller, "/v1/api/shop/secure", token=token_api.plain_token)
    location = accepted["Location"]
    assert_error(caller.get(location), 401, "requestError.invalidParams")
    assert_error(caller.get(location, headers={"token": "wrong"}), 401, "requestError.unauthorized")
    allowed = caller.get(location, headers={"token": token_api.plain_token})
    assert allowed.json()["response"]["status"] == "queued"


def test_a_run_of_an_api_without_authentication_needs_the_read_key_of_its_location(
    caller, open_api
):
    accepted = trigger(caller)
    location = accepted["Location"]
    path, key = location.split("?key=")
    assert caller.get(location).status_code == 200
    assert_error(caller.get(path), 404, "requestError.notFound")  # uids can be guessed
    wrong = key[:-1] + ("1" if key[-1] == "0" else "0")
    assert_error(caller.get(f"{path}?key={wrong}"), 404, "requestError.notFound")
    assert_error(caller.get(f"{path}?key="), 404, "requestError.notFound")


def test_a_run_of_another_api_is_not_found_even_with_that_apis_credentials(caller, token_api):
    other = make_api(token_api.workflow, method="other", auth_mode=AuthMode.NONE)
    uid = trigger(caller, "/v1/api/shop/secure", token=token_api.plain_token).json()["response"][
        "uid"
    ]
    response = caller.get(f"/v1/api/shop/{other.method}/executions/{uid}")
    assert_error(response, 404, "requestError.notFound")


@pytest.mark.parametrize(
    "uid", ["abc", "-1", "99999999999999999999999", "1" * 200, "9" * 5000, "0x10", "²"]
)
def test_unknown_or_malformed_uids_are_not_found(caller, open_api, uid):
    response = caller.get(f"/v1/api/shop/order/executions/{quote(uid)}")
    assert_error(response, 404, "requestError.notFound")


def test_unknown_api_is_not_found(caller, open_api):
    response = caller.get("/v1/api/shop/nope/executions/1")
    assert_error(response, 404, "requestError.notFound")


@pytest.mark.parametrize("wait", ["x", "-1", "31", "nan", "inf"])
def test_wait_must_be_a_number_of_seconds_within_the_limit(caller, open_api, wait):
    location = trigger(caller)["Location"]
    assert_error(caller.get(f"{location}&wait={quote(wait)}"), 400, "requestError.invalidParams")


@pytest.mark.parametrize("query", ["&wait=0&wait=1", "&wait=1&wait=", "&key=x"])
def test_a_repeated_wait_or_key_is_refused_not_read_as_its_last_value(caller, open_api, query):
    # The document says one value each (schemathesis found the last one winning).
    location = trigger(caller)["Location"]
    response = caller.get(location + query)
    assert_error(response, 400, "requestError.invalidParams")
    assert "at most once" in response.json()["response"]["error"]["message"]


def test_a_cancel_with_a_repeated_key_is_refused(caller, open_api):
    location = trigger(caller)["Location"]
    cancel = location.replace("?", "/cancel?", 1)
    assert_error(caller.post(cancel + "&key=x"), 400, "requestError.invalidParams")
    assert caller.get(location).json()["response"]["status"] == "queued"


@pytest.mark.parametrize("verb", ["post", "put", "delete"])
def test_status_is_read_with_get_only(caller, open_api, verb):
    location = trigger(caller)["Location"]
    response = getattr(caller, verb)(location)
    assert_error(response, 405, "requestError.methodNotAllowed")
    assert response["Allow"] == "GET"


def test_wait_returns_the_current_status_when_the_time_is_up(caller, open_api):
    location = trigger(caller)["Location"]
    started = time.monotonic()
    body = caller.get(f"{location}&wait=0.3").json()["response"]
    assert body["status"] == "queued"
    assert 0.3 <= time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_wait_answers_as_soon_as_the_run_finishes(caller, open_api):
    location = trigger(caller)["Location"]

    def worker():
        time.sleep(0.5)
        try:
            drain_queue()
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    started = time.monotonic()
    body = caller.get(f"{location}&wait=20").json()["response"]
    elapsed = time.monotonic() - started
    thread.join()
    assert body["status"] == "succeeded"
    assert 0.4 < elapsed < 5  # woken by the worker, not by the 20 s limit
    if connection.vendor == "postgresql":
        # By the worker's NOTIFY: without it the next re-read is 1 s into the wait.
        assert elapsed < 0.9


def test_waiting_requests_are_bounded_per_process(caller, open_api, settings):
    settings.IOLINKER_STATUS_MAX_WAITERS = 0  # no request may wait: answered at once
    location = trigger(caller)["Location"]
    started = time.monotonic()
    assert caller.get(f"{location}&wait=10").json()["response"]["status"] == "queued"
    assert time.monotonic() - started < 2
