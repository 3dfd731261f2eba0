"""The error statuses of the OpenAPI document: each operation lists every
status its code paths can answer (the error table's `on`), and a new error is
one line in the table."""

import pytest
from openapi_spec_validator import validate

from iolinker import errors
from iolinker.errors import ErrorSpec
from tests import test_openapi
from tests.test_openapi import (
    CANCEL_ERRORS,
    STATUS_ERRORS,
    TRIGGER_ERRORS,
    fetch,
)

apis = test_openapi.apis  # the fixture of the document's tests

pytestmark = pytest.mark.django_db


def responses_of(document, path):
    (operation,) = document["paths"][path].values()
    return set(operation["responses"])


def test_every_operation_lists_each_status_its_code_paths_can_answer(apis):
    document = fetch()
    assert responses_of(document, "/v1/api/shop/order/async") == {
        "202",
        *TRIGGER_ERRORS,
        "413",
        "408",
    }
    assert responses_of(document, "/v1/api/shop/order/sync") == {
        "200",
        "202",
        *TRIGGER_ERRORS,
        "413",
        "408",
    }
    # No body: no 413; no authentication: no 401.
    assert responses_of(document, "/v1/api/shop/stock/async") == {"202", *TRIGGER_ERRORS}
    assert responses_of(document, "/v1/api/hooks/ping/async") == {
        "202",
        "413",
        "408",
        *TRIGGER_ERRORS - {"401"},
    }
    for name in ("shop/order", "shop/stock"):
        assert responses_of(document, f"/v1/api/{name}/executions/{{uid}}") == {
            "200",
            *STATUS_ERRORS,
        }
        assert responses_of(document, f"/v1/api/{name}/executions/{{uid}}/cancel") == {
            "200",
            "202",
            *CANCEL_ERRORS,
        }
    assert responses_of(document, "/v1/api/hooks/ping/executions/{uid}") == {
        "200",
        *STATUS_ERRORS - {"401"},
    }


def test_a_status_with_a_contract_header_documents_it(apis):
    responses = fetch()["components"]["responses"]
    assert responses["Error429"]["headers"]["Retry-After"]["required"] is True
    assert responses["Error405"]["headers"]["Allow"]["required"] is True
    for status in ("414", "431", "422"):
        assert responses[f"Error{status}"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    assert "requestError.queryTooLarge" in responses["Error414"]["description"]
    assert "requestError.headersTooLarge" in responses["Error431"]["description"]
    # A code no operation answers is not listed under its status.
    assert "requestError.forbidden" not in responses["Error403"]["description"]


def test_a_new_error_is_one_line_in_the_table_and_documented_where_it_says(apis, monkeypatch):
    document = fetch()
    assert "415" not in responses_of(document, "/v1/api/shop/order/async")
    monkeypatch.setattr(
        errors,
        "UNSUPPORTED",
        ErrorSpec("requestError.unsupported", 415, "Unsupported", frozenset({errors.BODY})),
        raising=False,
    )
    monkeypatch.setattr(
        errors, "EVERYWHERE", ErrorSpec("requestError.new", 418, "New"), raising=False
    )
    document = fetch()
    validate(document)
    assert "415" in responses_of(document, "/v1/api/shop/order/async")  # POST: a body
    assert "415" not in responses_of(document, "/v1/api/shop/stock/async")  # GET
    assert "415" not in responses_of(document, "/v1/api/shop/order/executions/{uid}")
    assert (
        "requestError.unsupported" in document["components"]["responses"]["Error415"]["description"]
    )
    # Without `on`, everywhere until it says where.
    assert all("418" in operation["responses"] for operation in operations(document))


def operations(document):
    return [operation for item in document["paths"].values() for operation in item.values()]


def test_the_error_table_names_only_known_places(db):
    for spec in (v for v in vars(errors).values() if isinstance(v, ErrorSpec)):
        assert spec.on <= errors.ANYWHERE, spec
