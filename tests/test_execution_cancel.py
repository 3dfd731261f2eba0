"""POST …/executions/<uid>/cancel: same credentials as the API, through both HTTP paths."""

import threading
import time

import pytest
from django.db import connection

from tests.conftest import make_api, make_workflow
from tests.support.queue import drain_queue
from triggers.models import AuthMode
from triggers.services import api_set_token
from workflows.models import Execution, ExecutionStatus
from workflows.services import execution_run

pytestmark = pytest.mark.django_db
JSON = "application/json"


def trigger(caller, path="/v1/api/shop/order", **headers):
    response = caller.post(f"{path}/async", data="{}", content_type=JSON, headers=headers)
    assert response.status_code == 202, response.content
    return response


def cancel_url(location: str) -> str:
    path, _, query = location.partition("?")
    return f"{path}/cancel" + (f"?{query}" if query else "")


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == JSON
    assert response.json()["response"]["error"]["code"] == code


def test_a_queued_run_is_cancelled_and_cancelling_again_answers_the_same(caller, token_api):
    location = trigger(caller, "/v1/api/shop/secure", token=token_api.plain_token)["Location"]
    token = {"token": token_api.plain_token}
    response = caller.post(cancel_url(location), headers=token)
    assert response.status_code == 200, response.content
    body = response.json()["response"]
    assert body["status"] == "cancelled" and body["code"] == 2 and body["finishedAt"]
    assert caller.post(cancel_url(location), headers=token).json()["response"] == body
    drain_queue()
    assert caller.get(location, headers=token).json()["response"]["status"] == "cancelled"


def test_cancel_needs_the_api_credentials_and_post(caller, token_api):
    location = trigger(caller, "/v1/api/shop/secure", token=token_api.plain_token)["Location"]
    assert_error(caller.post(cancel_url(location)), 401, "requestError.invalidParams")
    assert_error(
        caller.post(cancel_url(location), headers={"token": "nope"}),
        401,
        "requestError.unauthorized",
    )
    assert_error(
        caller.get(cancel_url(location), headers={"token": token_api.plain_token}),
        405,
        "requestError.methodNotAllowed",
    )
    uid = location.rsplit("/", 1)[1]
    assert Execution.objects.get(uid=uid).status == ExecutionStatus.QUEUED


def test_another_apis_run_cannot_be_cancelled(caller, token_api):
    other = make_api(token_api.workflow, method="other", auth_mode=AuthMode.TOKEN)
    other_token = api_set_token(api=other)
    location = trigger(caller, "/v1/api/shop/secure", token=token_api.plain_token)["Location"]
    uid = location.rsplit("/", 1)[1]
    response = caller.post(
        f"/v1/api/shop/other/executions/{uid}/cancel", headers={"token": other_token}
    )
    assert_error(response, 404, "requestError.notFound")
    assert Execution.objects.get(uid=uid).status == ExecutionStatus.QUEUED


def test_an_open_apis_run_needs_its_read_key_to_be_cancelled(caller, open_api):
    location = trigger(caller)["Location"]
    path = location.split("?")[0]
    assert_error(caller.post(f"{path}/cancel"), 404, "requestError.notFound")
    assert caller.post(cancel_url(location)).status_code == 200


def test_a_finished_run_cannot_be_cancelled(caller, open_api):
    location = trigger(caller)["Location"]
    drain_queue()
    assert_error(caller.post(cancel_url(location)), 409, "requestError.executionFinished")


@pytest.mark.django_db(transaction=True)
def test_a_running_run_is_stopped_by_its_worker(caller, settings):
    settings.IOLINKER_CANCEL_POLL_MS = 100
    workflow = make_workflow(
        "slow", [("sleep", "code", {"code": "import time\ntime.sleep(30)", "timeout": 60})]
    )
    make_api(workflow, module="slow", method="run", auth_mode=AuthMode.NONE)
    location = trigger(caller, "/v1/api/slow/run")["Location"]
    uid = int(location.split("?")[0].rsplit("/", 1)[1])

    def worker():
        try:
            execution_run(uid=uid)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 20
    while Execution.objects.get(uid=uid).status != ExecutionStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    response = caller.post(cancel_url(location))
    assert response.status_code == 202, response.content
    assert response.json()["response"]["status"] == "running" and response["Location"] == location
    thread.join(timeout=15)
    assert not thread.is_alive()
    status = caller.get(location).json()["response"]
    assert status["status"] == "cancelled" and status["code"] == 2
