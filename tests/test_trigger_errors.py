"""Every row of the error table (README "Errors"), as a caller sees it."""

import pytest
from django.db import OperationalError
from django.test import override_settings

from workflows import ids
from workflows.models import Execution
from workflows.services import queueing

pytestmark = pytest.mark.django_db

JSON = "application/json"


def assert_error(response, status: int, code: str, message: str | None = None):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == JSON
    error = response.json()["response"]["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == code
    assert error["message"]
    if message is not None:
        assert message in error["message"]
    return error


def test_unknown_module_or_method_is_404(caller, open_api):
    assert_error(caller.post("/v1/api/nope/order/async"), 404, "requestError.notFound")
    assert_error(caller.post("/v1/api/shop/nope/async"), 404, "requestError.notFound")


def test_unknown_path_under_v1_is_a_json_404(caller, db):
    assert_error(caller.get("/v1/api/shop/order/sideways"), 404, "requestError.notFound")
    assert_error(caller.get("/v1/nothing-here"), 404, "requestError.notFound")


def test_disabled_api_is_refused(caller, open_api):
    open_api.enabled = False
    open_api.save()
    error = assert_error(
        caller.post("/v1/api/shop/order/async"), 403, "requestError.apiDisabled", "not enabled"
    )
    assert "shop/order" in error["message"]
    assert not Execution.objects.exists()


def test_api_whose_workflow_is_disabled_is_refused(caller, open_api):
    open_api.workflow.enabled = False
    open_api.workflow.save()
    assert_error(caller.post("/v1/api/shop/order/async"), 403, "requestError.apiDisabled")


@pytest.mark.parametrize("verb", ["get", "put", "patch", "delete", "head", "options"])
def test_wrong_verb_is_405_with_allow(caller, open_api, verb):
    response = getattr(caller, verb)("/v1/api/shop/order/async")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    if verb != "head":
        assert_error(response, 405, "requestError.methodNotAllowed")


@pytest.mark.parametrize(
    "body",
    ['{"a": ', "{'a': 1}", "not json", '{"a": NaN}', '{"a": 1} trailing', "[" * 100_000],
)
def test_malformed_json_is_400(caller, open_api, body):
    response = caller.post("/v1/api/shop/order/async", data=body, content_type=JSON)
    assert_error(response, 400, "requestError.invalidParams")
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        '{"a": 1e400}',
        '{"a": -1e999}',
        '{"a": "nul \\u0000 here"}',
        '{"nul\\u0000key": 1}',
        '{"a": "lone \\ud800 surrogate"}',
        '{"a": "\\udfff"}',
    ],
)
def test_values_the_database_cannot_store_are_400(caller, open_api, body):
    response = caller.post("/v1/api/shop/order/async", data=body, content_type=JSON)
    assert_error(response, 400, "requestError.invalidParams")
    assert not Execution.objects.exists()


def test_escaped_surrogate_pairs_are_fine(caller, open_api):
    body = '{"smile": "\\ud83d\\ude00"}'
    response = caller.post("/v1/api/shop/order/async", data=body, content_type=JSON)
    assert response.status_code == 202
    assert Execution.objects.get().input["body"] == {"smile": "\U0001f600"}


def test_nul_in_the_query_string_is_400(caller, echo_workflow):
    from tests.conftest import make_api

    make_api(echo_workflow, method="find", http_method="GET", auth_mode="none")
    assert_error(caller.get("/v1/api/shop/find/async?a=%00"), 400, "requestError.invalidParams")
    assert_error(caller.get("/v1/api/shop/find/async?%00=1"), 400, "requestError.invalidParams")


def test_too_many_query_fields_is_400(caller, open_api):
    query = "&".join(f"f{i}=1" for i in range(1100))
    response = caller.post(f"/v1/api/shop/order/async?{query}", data="{}", content_type=JSON)
    assert_error(response, 400, "requestError.badRequest")


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "42", "null"])
def test_json_that_is_not_an_object_is_400(caller, open_api, body):
    response = caller.post("/v1/api/shop/order/async", data=body, content_type=JSON)
    assert_error(response, 400, "requestError.invalidParams", "JSON object")


def test_invalid_utf8_is_400(caller, open_api):
    response = caller.post("/v1/api/shop/order/async", data=b'{"a": "\xff"}', content_type=JSON)
    assert_error(response, 400, "requestError.invalidParams")


def test_body_over_the_limit_is_413(caller, open_api):
    with override_settings(IOLINKER_MAX_BODY_BYTES=1000):
        small = caller.post("/v1/api/shop/order/async", data='{"a": "x"}', content_type=JSON)
        big = caller.post(
            "/v1/api/shop/order/async", data='{"a": "' + "x" * 1000 + '"}', content_type=JSON
        )
    assert small.status_code == 202
    assert_error(big, 413, "requestError.payloadTooLarge", "1000 bytes")
    assert Execution.objects.count() == 1


def test_default_body_limit_is_one_mebibyte(caller, open_api):
    fits = '{"a": "' + "x" * (1024 * 1024 - 20) + '"}'
    too_big = '{"a": "' + "x" * (1024 * 1024) + '"}'
    assert caller.post("/v1/api/shop/order/async", data=fits, content_type=JSON).status_code == 202
    response = caller.post("/v1/api/shop/order/async", data=too_big, content_type=JSON)
    assert_error(response, 413, "requestError.payloadTooLarge")


def test_unexpected_error_is_a_json_500_without_traceback(caller, open_api, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ids, "next_uid", explode)
    response = caller.post("/v1/api/shop/order/async", data="{}", content_type=JSON)
    error = assert_error(response, 500, "serverError.internal")
    assert "secret internals" not in error["message"]
    assert b"Traceback" not in response.content


def test_database_down_is_503_and_no_uid(caller, open_api, monkeypatch):
    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(queueing, "queue_push", down)
    response = caller.post("/v1/api/shop/order/async", data="{}", content_type=JSON)
    assert_error(response, 503, "serverError.unavailable")
    assert "uid" not in response.content.decode()
    assert not Execution.objects.exists()  # the transaction rolled back


def test_queue_down_with_a_non_transactional_broker_is_503_and_leaves_no_run(
    caller, open_api, monkeypatch
):
    # The Redis broker path: the row commits first, then the push fails.
    def push_fails(**kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(queueing, "queue_is_transactional", lambda: False)
    monkeypatch.setattr(queueing, "queue_push", push_fails)
    response = caller.post("/v1/api/shop/order/async", data="{}", content_type=JSON)
    assert_error(response, 503, "serverError.unavailable", "queue")
    assert not Execution.objects.exists()


def test_pages_outside_the_api_still_answer_html_errors(admin_client):
    response = admin_client.get("/admin/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
