"""The OpenAPI document: GET /v1/openapi.json and `manage.py write_openapi`."""

import io
import json

import jsonschema
import pytest
from django.core.management import call_command
from django.test import Client
from openapi_spec_validator import validate

from iolinker import errors
from iolinker.errors import ErrorSpec
from tests.conftest import make_api, make_workflow
from tests.helpers import drain_queue
from triggers import services
from triggers.callbacks import callback_body
from triggers.models import AuthMode
from triggers.services import run_read_key
from workflows.models import Execution, ExecutionStatus

pytestmark = pytest.mark.django_db

URL = "/v1/openapi.json"
OK_STEPS = [("result", "output", {"value": {"ok": True}})]


@pytest.fixture
def apis():
    """A mix: a token POST API with /sync, a user+password GET API, an open POST
    API, a disabled one and one whose workflow is disabled."""
    workflow = make_workflow("orders", OK_STEPS)
    workflow.description = "Takes orders."
    workflow.save()
    token = make_api(
        workflow,
        module="shop",
        method="order",
        auth_mode=AuthMode.TOKEN,
        sync_enabled=True,
        sync_timeout=1,  # no worker here: /sync answers 202 after it
        debug_payload={"sku": "A-1", "qty": 2},
        description="Place an order",
    )
    token.plain_token = services.api_set_token(api=token)
    password = make_api(
        workflow,
        module="shop",
        method="stock",
        http_method="GET",
        auth_mode=AuthMode.PASSWORD,
        debug_payload={"sku": "A-1"},
    )
    services.api_set_password(api=password, user="alice", password="s3cret-pass")
    public = make_api(workflow, module="hooks", method="ping", auth_mode=AuthMode.NONE)
    make_api(workflow, module="shop", method="retired", enabled=False)
    idle = make_workflow("idle", OK_STEPS)
    idle.enabled = False
    idle.save()
    make_api(idle, module="shop", method="paused", auth_mode=AuthMode.NONE)
    return {"token": token, "password": password, "public": public}


def fetch(client=None) -> dict:
    response = (client or Client()).get(URL)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["response"]["error"]["code"] == code


def test_the_document_is_a_valid_openapi_3_1_document(apis):
    document = fetch()
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_an_empty_platform_still_has_a_valid_document(db):
    document = fetch()
    validate(document)
    assert document["paths"] == {}


def test_each_enabled_api_has_its_paths_verbs_and_security(apis):
    paths = fetch()["paths"]
    assert set(paths) == {
        "/v1/api/shop/order/async",
        "/v1/api/shop/order/sync",
        "/v1/api/shop/order/executions/{uid}",
        "/v1/api/shop/order/executions/{uid}/cancel",
        "/v1/api/shop/stock/async",
        "/v1/api/shop/stock/executions/{uid}",
        "/v1/api/shop/stock/executions/{uid}/cancel",
        "/v1/api/hooks/ping/async",
        "/v1/api/hooks/ping/executions/{uid}",
        "/v1/api/hooks/ping/executions/{uid}/cancel",
    }
    # Only the API's own verb; the status endpoint is GET.
    assert {path: list(item) for path, item in paths.items()} == {
        "/v1/api/shop/order/async": ["post"],
        "/v1/api/shop/order/sync": ["post"],
        "/v1/api/shop/order/executions/{uid}": ["get"],
        "/v1/api/shop/order/executions/{uid}/cancel": ["post"],
        "/v1/api/shop/stock/async": ["get"],
        "/v1/api/shop/stock/executions/{uid}": ["get"],
        "/v1/api/shop/stock/executions/{uid}/cancel": ["post"],
        "/v1/api/hooks/ping/async": ["post"],
        "/v1/api/hooks/ping/executions/{uid}": ["get"],
        "/v1/api/hooks/ping/executions/{uid}/cancel": ["post"],
    }
    security = {
        path: operation["security"] for path, item in paths.items() for operation in item.values()
    }
    assert security["/v1/api/shop/order/async"] == [{"token": []}]
    assert security["/v1/api/shop/order/sync"] == [{"token": []}]
    assert security["/v1/api/shop/order/executions/{uid}"] == [{"token": []}]
    # user and password in one requirement object: both are needed together.
    assert security["/v1/api/shop/stock/async"] == [{"user": [], "password": []}]
    assert security["/v1/api/hooks/ping/async"] == []


def test_security_schemes_are_the_callers_headers(apis):
    schemes = fetch()["components"]["securitySchemes"]
    assert schemes == {
        "token": {**schemes["token"], "type": "apiKey", "in": "header", "name": "token"},
        "user": {**schemes["user"], "type": "apiKey", "in": "header", "name": "user"},
        "password": {**schemes["password"], "type": "apiKey", "in": "header", "name": "password"},
    }


def test_a_trigger_answers_202_with_the_uid_and_location(apis):
    document = fetch()
    operation = document["paths"]["/v1/api/shop/order/async"]["post"]
    assert operation["responses"]["202"] == {"$ref": "#/components/responses/Accepted"}
    accepted = document["components"]["responses"]["Accepted"]
    assert set(accepted["headers"]) == {"Location", "Idempotent-Replayed"}
    assert document["components"]["headers"]["Location"]["required"] is True
    schema = document["components"]["schemas"]["Accepted"]
    assert schema["properties"]["response"]["required"] == ["uid"]
    # A POST body is a JSON object, with the debug payload as its example.
    body = operation["requestBody"]["content"]["application/json"]
    assert body == {"schema": {"type": "object"}, "example": {"sku": "A-1", "qty": 2}}
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in operation["parameters"]
    assert set(operation["responses"]) == {
        "202",
        "400",
        "401",
        "403",
        "404",
        "405",
        "413",
        "422",
        "429",
        "500",
        "503",
    }


def test_a_get_api_takes_free_form_query_parameters_and_no_body(apis):
    operation = fetch()["paths"]["/v1/api/shop/stock/async"]["get"]
    assert "requestBody" not in operation
    (query,) = [p for p in operation["parameters"] if p.get("in") == "query"]
    assert (query["style"], query["explode"], query["schema"]["type"]) == ("form", True, "object")
    assert query["example"] == {"sku": "A-1"}
    assert "413" not in operation["responses"]


def test_sync_is_documented_only_where_it_is_on(apis):
    document = fetch()
    operation = document["paths"]["/v1/api/shop/order/sync"]["post"]
    assert {"200", "202"} <= set(operation["responses"])
    result = document["components"]["schemas"]["SyncResult"]["properties"]["response"]
    assert set(result["properties"]) == {"data", "code", "msg", "uid"}
    assert "/v1/api/shop/stock/sync" not in document["paths"]


def test_the_status_endpoint_takes_wait_and_for_an_open_api_the_read_key(apis):
    document = fetch()
    parameters = document["components"]["parameters"]
    assert parameters["Wait"]["schema"] == {"type": "number", "minimum": 0, "maximum": 30}
    assert parameters["IdempotencyKey"]["schema"]["maxLength"] == 255

    def names(path):
        refs = document["paths"][path]["get"]["parameters"]
        return [parameters[ref["$ref"].rsplit("/", 1)[1]]["name"] for ref in refs]

    assert names("/v1/api/hooks/ping/executions/{uid}") == ["uid", "key", "wait"]
    assert names("/v1/api/shop/order/executions/{uid}") == ["uid", "wait"]
    responses = document["paths"]["/v1/api/hooks/ping/executions/{uid}"]["get"]["responses"]
    assert "401" not in responses  # nothing to authenticate


def test_the_status_enum_is_every_execution_status(apis):
    schema = fetch()["components"]["schemas"]["ExecutionStatus"]
    assert schema["properties"]["status"]["enum"] == [s.value for s in ExecutionStatus]
    assert schema["properties"]["status"]["enum"] == [
        "queued",
        "running",
        "waiting",
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
    ]
    assert set(schema["properties"]) == {
        "uid",
        "status",
        "data",
        "code",
        "msg",
        "createdAt",
        "startedAt",
        "finishedAt",
    }


def test_the_error_code_enum_is_every_code_of_the_error_table(apis):
    document = fetch()
    table = {v.code for v in vars(errors).values() if isinstance(v, ErrorSpec)}
    assert set(document["components"]["schemas"]["ErrorCode"]["enum"]) == table
    assert "requestError.idempotencyKeyReused" in table
    described = document["components"]["responses"]["Error422"]["description"]
    assert "requestError.idempotencyKeyReused" in described


def test_a_new_error_code_appears_in_the_document(apis, monkeypatch):
    monkeypatch.setattr(
        errors, "TOO_MANY", ErrorSpec("requestError.tooMany", 429, "Slow down"), raising=False
    )
    schemas = fetch()["components"]["schemas"]
    assert "requestError.tooMany" in schemas["ErrorCode"]["enum"]


def test_the_callback_is_a_webhook_with_standard_webhooks_headers(apis):
    document = fetch()
    post = document["webhooks"]["executionFinished"]["post"]
    assert [p["name"] for p in post["parameters"]] == [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/CallbackPayload"


def test_the_callback_body_matches_its_schema(apis):
    api = apis["public"]
    uid = Client().post(api.path, "{}", content_type="application/json").json()["response"]
    drain_queue()
    execution = Execution.objects.get(uid=uid["uid"])
    payload = json.loads(callback_body(execution=execution, api=api))
    assert_matches(fetch(), "CallbackPayload", payload)


def test_the_command_writes_what_the_endpoint_serves(apis, settings, tmp_path):
    settings.IOLINKER_BASE_URL = "https://iolinker.example.com"
    served = Client().get(URL).content
    out = io.StringIO()
    call_command("write_openapi", stdout=out)
    assert out.getvalue().encode() == served
    call_command("write_openapi", "-o", str(tmp_path / "openapi.json"), stderr=io.StringIO())
    assert (tmp_path / "openapi.json").read_bytes() == served
    assert json.loads(served)["servers"] == [{"url": "https://iolinker.example.com"}]


def test_without_a_base_url_the_server_is_the_requests_host(apis, settings):
    settings.IOLINKER_BASE_URL = ""
    document = fetch(Client(HTTP_HOST="127.0.0.1:8000"))
    assert document["servers"] == [{"url": "http://127.0.0.1:8000"}]
    out = io.StringIO()
    call_command("write_openapi", stdout=out)
    assert "servers" not in json.loads(out.getvalue())


def test_post_to_the_document_is_405(caller, db):
    response = caller.post(URL, "{}", content_type="application/json")
    assert_error(response, 405, "requestError.methodNotAllowed")
    assert response["Allow"] == "GET, HEAD"


def test_the_document_through_the_wsgi_application(caller, apis):
    # The production WSGI entry hands it to Django (its fast path is /async only).
    validate(fetch(caller))


def test_the_document_is_404_when_not_public(caller, apis, settings):
    settings.IOLINKER_OPENAPI_PUBLIC = False
    assert_error(caller.get(URL), 404, "requestError.notFound")


def test_cancel_is_documented_with_the_apis_security(apis):
    document = fetch()
    validate(document)
    for path, security in [
        ("/v1/api/shop/order/executions/{uid}/cancel", [{"token": []}]),
        ("/v1/api/hooks/ping/executions/{uid}/cancel", []),
    ]:
        operation = document["paths"][path]["post"]
        assert operation["security"] == security
        assert {"200", "202", "404", "409"} <= set(operation["responses"])
        assert "Location" in operation["responses"]["202"]["headers"]
    open_cancel = document["paths"]["/v1/api/hooks/ping/executions/{uid}/cancel"]["post"]
    assert {"$ref": "#/components/parameters/ReadKey"} in open_cancel["parameters"]


# --- What the document promises is what the server answers -----------------------


def assert_matches(document: dict, schema: str, value) -> None:
    """Validate a value against a component schema of the document."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(value)


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
    answers = [
        (401, order, client.post(order, "{}", "application/json")),
        (400, order, client.post(order, "[1]", "application/json", headers=token)),
        (404, ping, client.get(ping.replace("{uid}", "1"))),  # no read key
    ]
    for status, path, response in answers:
        assert response.status_code == status
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
