"""The OpenAPI document: GET /v1/openapi.json and `manage.py write_openapi`:
its validity, paths, security, schemas, examples, callbacks and how it is served."""

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
from tests.support.queue import drain_queue
from triggers import services
from triggers.callbacks import callback_body
from triggers.models import AuthMode
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
        publish_example=True,
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
        publish_example=True,
    )
    services.api_set_password(api=password, user="alice", password="s3cret-pass")
    password.credentials = {"user": "alice", "password": "s3cret-pass"}
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
    # A POST body is a JSON object, with the published debug payload as its example.
    body = operation["requestBody"]["content"]["application/json"]
    assert body == {
        "schema": {"$ref": "#/components/schemas/TriggerBody"},
        "example": {"sku": "A-1", "qty": 2},
    }
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in operation["parameters"]
    assert set(operation["responses"]) == {"202", *TRIGGER_ERRORS, "413", "408"}


# What each operation can answer besides its successes (iolinker/errors.py, `on`).
TRIGGER_ERRORS = {"400", "401", "403", "404", "405", "414", "422", "429", "431", "500", "503"}
STATUS_ERRORS = {"400", "401", "403", "404", "405", "429", "500", "503"}
CANCEL_ERRORS = {"400", "401", "403", "404", "405", "409", "429", "500", "503"}


def test_the_debug_payload_is_published_only_where_the_api_says_so(apis):
    def examples(document):
        post = document["paths"]["/v1/api/shop/order/async"]["post"]
        get = document["paths"]["/v1/api/shop/stock/async"]["get"]
        (query,) = [p for p in get["parameters"] if p.get("in") == "query"]
        return post["requestBody"]["content"]["application/json"].get("example"), query.get(
            "example"
        )

    assert examples(fetch()) == ({"sku": "A-1", "qty": 2}, {"sku": "A-1"})
    for api in (apis["token"], apis["password"]):
        api.publish_example = False
        api.save()
    document = fetch()
    assert examples(document) == (None, None)
    assert "A-1" not in json.dumps(document)


def test_a_new_api_does_not_publish_its_debug_payload(db):
    api = make_api(make_workflow("wf", OK_STEPS), debug_payload={"ops-only-7f3a": "x"})
    assert api.publish_example is False
    assert "ops-only-7f3a" not in Client().get(URL).content.decode()


def test_the_input_schemas_refuse_what_the_server_refuses(apis):
    document = fetch()
    assert_matches(document, "TriggerBody", {"a": ["x", {"b": 1.5, "c": None}], "": True})
    for body in ({"a": "\x00"}, {"\x00": 1}, {"a": [{"b": "x\x00"}]}, [1], "x"):
        with pytest.raises(jsonschema.ValidationError):
            assert_matches(document, "TriggerBody", body)
    (query,) = [
        p
        for p in document["paths"]["/v1/api/shop/stock/async"]["get"]["parameters"]
        if p.get("in") == "query"
    ]
    root = {**query["schema"], "components": document["components"]}
    validator = jsonschema.Draft202012Validator(root)
    assert validator.is_valid({"a": "x", "b": ["1", "2"]})
    assert not validator.is_valid({"a": "x\x00"})
    assert not validator.is_valid({"a": ["x", "\x00"]})
    assert not validator.is_valid({"\x00": "x"})
    assert not validator.is_valid({"a": {"b\x00": "x"}})  # sent as a[b\x00]=x
    key = document["components"]["parameters"]["IdempotencyKey"]["schema"]
    key_validator = jsonschema.Draft202012Validator(key, format_checker=None)
    assert key_validator.is_valid("order-1 retry") and key_validator.is_valid("a")
    for refused in ("", " ", " a", "a ", "é", "a" * 256):
        assert not key_validator.is_valid(refused), refused


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


def assert_matches(document: dict, schema: str, value) -> None:
    """Validate a value against a component schema of the document."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(value)
