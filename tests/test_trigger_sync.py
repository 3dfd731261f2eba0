"""Sync calls: /v1/api/<module>/<method>/sync answers the result, or the uid in time."""

import contextlib
import threading
import time

import pytest
from django.db import connection

from tests.conftest import make_api, make_workflow
from tests.support.queue import drain_queue
from triggers.models import AuthMode
from triggers.services import run_read_key

JSON = "application/json"


@contextlib.contextmanager
def worker():
    """Runs queued work in the background, like a qcluster worker."""
    stop = threading.Event()

    def loop():
        try:
            while not stop.is_set():
                drain_queue()
                stop.wait(0.05)
        finally:
            connection.close()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def sync_api(workflow, **kwargs):
    return make_api(workflow, auth_mode=AuthMode.NONE, sync_enabled=True, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_sync_call_answers_the_result(caller, echo_workflow):
    sync_api(echo_workflow)
    with worker():
        response = caller.post("/v1/api/shop/order/sync", data='{"a": 1}', content_type=JSON)
    assert response.status_code == 200
    body = response.json()["response"]
    assert body["data"] == {"body": {"a": 1}, "query": {}, "method": "POST"}
    assert (body["code"], body["msg"]) == (0, "")
    assert body["uid"].isdigit()


@pytest.mark.django_db(transaction=True)
def test_sync_call_of_a_failing_run_answers_its_code_and_message(caller):
    workflow = make_workflow("fails", [("boom", "code", {"code": "raise KeyError('sku')"})])
    sync_api(workflow)
    with worker():
        response = caller.post("/v1/api/shop/order/sync", data="{}", content_type=JSON)
    body = response.json()["response"]
    assert response.status_code == 200
    assert body["code"] == 1 and "sku" in body["msg"]


@pytest.mark.django_db(transaction=True)
def test_sync_call_past_its_timeout_answers_202_with_the_uid(caller, echo_workflow):
    sync_api(echo_workflow, sync_timeout=1)
    started = time.monotonic()
    response = caller.post("/v1/api/shop/order/sync", data="{}", content_type=JSON)  # no worker
    assert 1 <= time.monotonic() - started < 5
    assert response.status_code == 202
    uid = response.json()["response"]["uid"]
    assert response["Location"] == f"/v1/api/shop/order/executions/{uid}?key={run_read_key(uid)}"
    assert caller.get(response["Location"]).json()["response"]["status"] == "queued"


@pytest.mark.django_db
def test_an_api_without_sync_answers_404_on_sync(caller, open_api):
    response = caller.post("/v1/api/shop/order/sync", data="{}", content_type=JSON)
    assert response.status_code == 404
    assert response.json()["response"]["error"]["code"] == "requestError.notFound"


@pytest.mark.django_db
def test_sync_calls_check_the_api_like_async_ones(caller, echo_workflow):
    api = make_api(echo_workflow, method="secure", sync_enabled=True)  # token auth, no token
    response = caller.post("/v1/api/shop/secure/sync", data="{}", content_type=JSON)
    assert response.status_code == 401
    api.enabled = False
    api.save()
    assert caller.post("/v1/api/shop/secure/sync").status_code == 403
    assert caller.get("/v1/api/shop/secure/sync").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_the_demo_api_answers_sync(caller):
    from triggers.demo import demo_load

    demo_load()
    with worker():
        response = caller.post("/v1/api/demo/hello/sync", data='{"name": "Ada"}', content_type=JSON)
    assert response.status_code == 200
    body = response.json()["response"]
    assert body["code"] == 0 and "Ada" in str(body["data"])
