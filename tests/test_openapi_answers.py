"""What the OpenAPI document promises is what the server answers: every
documented operation's statuses and bodies, the errors answered, the cost of
the document."""

import json

import pytest
from django.test import Client

from tests import test_openapi
from tests.support.queue import drain_queue
from tests.test_openapi import URL, assert_matches, fetch
from triggers.services import run_read_key

apis = test_openapi.apis  # the fixture of the document's tests

pytestmark = pytest.mark.django_db


# --- What the document promises is what the server answers -----------------------


def schema_of(document: dict, response: dict) -> str | None:
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content", {}).get("application/json")
    return content["schema"]["$ref"].rsplit("/", 1)[1] if content else None


def test_every_documented_operation_answers_a_documented_status_and_body(apis):
    """A real call per operation, with valid credentials: its status is one the
    document lists for it, and its body matches that response's schema."""
    document = fetch()
    credentials = {
        "shop/order": {"token": apis["token"].plain_token},
        "shop/stock": {"user": "alice", "password": "s3cret-pass"},
        "hooks/ping": {},
    }
    uids = {}
    client = Client()
    calls = 0
    for path, item in document["paths"].items():
        name = "/".join(path.split("/")[3:5])
        for verb, operation in item.items():
            if path.endswith(("/async", "/sync")):
                url, data = path, operation.get("requestBody", {}).get("content", {})
                body = data.get("application/json", {}).get("example", {})
                query = next(
                    (p.get("example", {}) for p in operation["parameters"] if "in" in p), {}
                )
                if verb == "post":
                    response = client.post(
                        url, json.dumps(body), "application/json", headers=credentials[name]
                    )
                else:
                    response = client.get(url, query, headers=credentials[name])
                if response.status_code == 202:
                    uids[name] = response.json()["response"]["uid"]
                drain_queue()
            else:
                uid = uids[name]
                url = path.replace("{uid}", uid)
                if name == "hooks/ping":
                    url += "?key=" + run_read_key(uid)
                response = getattr(client, verb)(url, headers=credentials[name])
                if path.endswith("/cancel"):  # the run already ended (the queue was drained)
                    assert response.status_code == 409, response.content
            assert str(response.status_code) in operation["responses"], (path, response.content)
            schema = schema_of(document, operation["responses"][str(response.status_code)])
            assert_matches(document, schema, response.json())
            calls += 1
    assert calls == 10


def test_errors_answered_are_documented_and_match_the_error_schema(apis):
    document = fetch()
    client = Client()
    token = {"token": apis["token"].plain_token}
    order, ping = "/v1/api/shop/order/async", "/v1/api/hooks/ping/executions/{uid}"
    stock = "/v1/api/shop/stock/async"
    status = "/v1/api/shop/order/executions/{uid}"
    uid = client.post(order, "{}", "application/json", headers=token).json()["response"]["uid"]
    once = {**token, "Idempotency-Key": "k-1"}
    client.post(order, '{"a": 1}', "application/json", headers=once)
    answers = [
        (401, order, client.post(order, "{}", "application/json")),
        (400, order, client.post(order, "[1]", "application/json", headers=token)),
        (400, order, client.post(order, '{"a": "\\u0000"}', "application/json", headers=token)),
        (400, stock, client.get(stock + "?a=%00", headers=apis["password"].credentials)),
        (404, ping, client.get(ping.replace("{uid}", "1"))),  # no read key
        (
            413,
            order,
            client.post(order, "{}" + " " * 1024 * 1024, "application/json", headers=token),
        ),
        (414, order, client.post(order + "?q=" + "x" * 17_000, "{}", "application/json")),
        (431, order, client.post(order, "{}", "application/json", headers={"x-big": "x" * 17_000})),
        (422, order, client.post(order, '{"a": 2}', "application/json", headers=once)),
        (400, status, client.get(status.replace("{uid}", uid) + "?wait=1&wait=2", headers=token)),
    ]
    # Wrong tokens from one address: the throttle's 429 (last: it blocks the address).
    wrong = [client.post(order, "{}", "application/json", headers={"token": "no"})]
    while wrong[-1].status_code == 401 and len(wrong) < 50:
        wrong.append(client.post(order, "{}", "application/json", headers={"token": "no"}))
    answers.append((429, order, wrong[-1]))
    answers.append((429, status, client.get(status.replace("{uid}", uid), headers=token)))
    assert int(wrong[-1]["Retry-After"]) >= 1
    for status, path, response in answers:
        assert response.status_code == status, (path, response.content[:200])
        (operation,) = document["paths"][path].values()
        assert str(status) in operation["responses"]
        assert schema_of(document, operation["responses"][str(status)]) == "Error"
        assert_matches(document, "Error", response.json())
    # Another verb than the documented one: 405, also in the envelope.
    response = client.get(order, headers=token)
    assert (response.status_code, response["Allow"]) == (405, "POST")
    assert_matches(document, "Error", response.json())


def test_the_document_costs_one_query_however_many_apis(apis, django_assert_num_queries):
    with django_assert_num_queries(1):
        Client().get(URL)
