"""The HTTP contract of /v1/api/<module>/<method>/async."""

import json
import re

import pytest
from django.db import connection

from tests.conftest import make_api, make_workflow
from tests.support.queue import drain_queue, queue_is_redis, queued_messages
from triggers.models import AuthMode
from triggers.services import run_read_key
from workflows.models import Execution, ExecutionStatus

pytestmark = pytest.mark.django_db


def test_post_is_accepted_with_exactly_a_string_uid(caller, open_api):
    response = caller.post(
        "/v1/api/shop/order/async", data='{"item": "book"}', content_type="application/json"
    )
    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["response"] and list(body["response"]) == ["uid"]
    uid = body["response"]["uid"]
    assert isinstance(uid, str) and re.fullmatch(r"[1-9][0-9]{9,18}", uid)
    key = run_read_key(uid)  # the API has no authentication: the URL carries a read key
    assert response["Location"] == f"/v1/api/shop/order/executions/{uid}?key={key}"


def test_accepted_run_is_committed_and_queued_before_the_answer(caller, open_api):
    response = caller.post("/v1/api/shop/order/async", data="{}", content_type="application/json")
    execution = Execution.objects.get(uid=int(response.json()["response"]["uid"]))
    assert execution.status == ExecutionStatus.QUEUED
    assert execution.api == open_api and execution.workflow == open_api.workflow
    assert queued_messages() == 1


def test_post_body_and_query_reach_the_workflow(caller, open_api):
    response = caller.post(
        "/v1/api/shop/order/async?channel=web&tag=a&tag=b",
        data=json.dumps({"item": "book", "qty": 2, "tags": ["x"]}),
        content_type="application/json",
    )
    assert drain_queue() == 1
    execution = Execution.objects.get(uid=int(response.json()["response"]["uid"]))
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {
        "body": {"item": "book", "qty": 2, "tags": ["x"]},
        "query": {"channel": "web", "tag": ["a", "b"]},
        "method": "POST",
    }


def test_get_query_string_reaches_the_workflow(caller, echo_workflow):
    make_api(echo_workflow, module="shop", method="lookup", http_method="GET", auth_mode="none")
    response = caller.get("/v1/api/shop/lookup/async", {"sku": "A-1", "n": "3"})
    assert response.status_code == 202
    drain_queue()
    execution = Execution.objects.get(uid=int(response.json()["response"]["uid"]))
    assert execution.output == {"body": {}, "query": {"sku": "A-1", "n": "3"}, "method": "GET"}


def test_empty_post_body_is_an_empty_object(caller, open_api):
    response = caller.post("/v1/api/shop/order/async", data="", content_type="application/json")
    assert response.status_code == 202
    drain_queue()
    assert Execution.objects.get().output["body"] == {}


def test_json_body_is_read_whatever_the_content_type(caller, open_api):
    # `curl -d '{...}'` sends application/x-www-form-urlencoded.
    response = caller.post(
        "/v1/api/shop/order/async",
        data='{"name": "x"}',
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 202
    drain_queue()
    assert Execution.objects.get().output["body"] == {"name": "x"}


def test_only_allow_listed_headers_are_stored_and_never_credentials(caller, token_api, settings):
    settings.IOLINKER_TRIGGER_HEADERS = settings.IOLINKER_TRIGGER_HEADERS | {"token", "x-hook"}
    caller.post(
        "/v1/api/shop/secure/async",
        data="{}",
        content_type="application/json",
        headers={
            "token": token_api.plain_token,
            "X-Request-Id": "r-1",
            "X-Hook": "push",
            "Cookie": "a=b",
            "X-Auth-Token": "sekrit",
            "Api-Key": "k2",
        },
    )
    headers = Execution.objects.get().input["headers"]
    assert headers["x-request-id"] == "r-1" and headers["x-hook"] == "push"
    assert headers["content-type"] == "application/json"
    assert not {"token", "cookie", "x-auth-token", "api-key"} & set(headers)
    stored = json.dumps(Execution.objects.get().input)
    assert token_api.plain_token not in stored and "sekrit" not in stored


def test_each_accepted_call_gets_its_own_increasing_uid(caller, open_api):
    uids = [
        int(
            caller.post(
                "/v1/api/shop/order/async", data="{}", content_type="application/json"
            ).json()["response"]["uid"]
        )
        for _ in range(50)
    ]
    assert len(set(uids)) == 50
    assert uids == sorted(uids)


def test_trigger_path_costs_a_fixed_number_of_queries(caller, open_api, django_assert_num_queries):
    caller.post("/v1/api/shop/order/async", data="{}", content_type="application/json")
    # (the first call above leases this process's uid number; the API definition
    # is cached from then on). PostgreSQL: one statement writes the run and its
    # queue message (ORM broker) or the run alone (Redis broker, message in
    # Redis). SQLite: the run and the message in one transaction (+ SAVEPOINT
    # and RELEASE inside the test's transaction).
    one_statement = queue_is_redis() or connection.vendor == "postgresql"
    with django_assert_num_queries(1 if one_statement else 4):
        response = caller.post("/v1/api/shop/order/async", data="{}", content_type="text/json")
    assert response.status_code == 202


def test_workflow_without_output_step_returns_last_step_output(caller):
    workflow = make_workflow("no-output", [("only", "transform", {"value": {"n": 1}})])
    make_api(workflow, auth_mode=AuthMode.NONE)
    caller.post("/v1/api/shop/order/async", data="{}", content_type="application/json")
    drain_queue()
    assert Execution.objects.get().output == {"n": 1}


def test_a_changed_api_is_seen_at_once_by_the_process_that_changed_it(caller, open_api):
    assert caller.post("/v1/api/shop/order/async").status_code != 403  # now cached
    open_api.enabled = False
    open_api.save()
    assert caller.post("/v1/api/shop/order/async").status_code == 403


def test_apis_switched_in_bulk_are_seen_at_once(caller, open_api):
    from triggers.models import ApiDefinition
    from triggers.services import api_set_enabled

    caller.post("/v1/api/shop/order/async", data="{}", content_type="application/json")
    api_set_enabled(apis=ApiDefinition.objects.all(), enabled=False)
    assert caller.post("/v1/api/shop/order/async").status_code == 403
