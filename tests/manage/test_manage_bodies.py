"""What the management API refuses in a request body, and how: the checks of a
trigger's body (nesting depth, strict UTF-8, text the database cannot store) as
400 envelopes, never a RecursionError's or an encoder's 500 (a review found
both); a conflicting concurrent change is 409; every domain error has its row."""

import inspect
import json

import pytest
from django.db import IntegrityError

from iolinker import errors, responses
from tests.conftest import make_workflow
from tests.manage.test_manage_runs import document
from workflows import errors as domain_errors
from workflows.models import Workflow

DEEP = 50_000


def raw_post(client, path: str, raw: bytes):
    return client.client.post(
        f"/v1/manage/{path}",
        data=raw,
        content_type="application/json",
        headers={"authorization": f"Token {client.token}"},
    )


def refusal(response) -> str:
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    answer = json.loads(response.content)["response"]["error"]
    assert answer["code"] == "requestError.invalidParams"
    return answer["message"]


@pytest.mark.parametrize("path", ["workflows/import/", "apis/"])
def test_a_body_nested_past_the_limit_is_400_not_a_recursion_error(operator, path):
    deep = b"[" * DEEP + b"]" * DEEP
    assert "nested deeper" in refusal(raw_post(operator, path, b'{"a": ' + deep + b"}"))


def test_a_step_config_nested_900_deep_is_400(operator):
    doc = document("deep")
    config = doc["steps"][0]["config"]
    config["value"] = json.loads("[" * 900 + "]" * 900)
    assert "nested deeper" in refusal(operator.post("workflows/import/", doc))
    assert not Workflow.objects.exists()


def test_a_lone_surrogate_or_nul_in_an_imported_name_is_400(operator):
    for text in ('"\\ud800"', '"a\\u0000b"'):
        raw = json.dumps(document("x")).replace('"x"', text, 1).encode()
        refusal(raw_post(operator, "workflows/import/", raw))
    refusal(raw_post(operator, "workflows/import/", b"\xff\xfe{}"))  # UTF-16 bytes
    refusal(raw_post(operator, "workflows/import/", b'{"a": "\xed\xa0\x80"}'))  # CESU-8
    assert not Workflow.objects.exists()


def test_a_list_of_documents_is_still_accepted(operator):
    response = operator.post("workflows/import/", [document("a"), document("b")])
    assert response.status_code == 201, response.content


def test_a_conflicting_concurrent_change_is_409():
    """Two identical creates at once: the loser's insert breaks a unique
    constraint after its checks passed (15 rounds of two concurrent POST apis/
    gave ten 500s)."""
    spec, message, _ = responses.error_parts(
        IntegrityError("duplicate key value violates unique constraint"), method="POST", path="/"
    )
    assert (spec.status, spec.code) == (409, "requestError.conflict")
    assert "duplicate key" not in message  # the database's text is not echoed


def test_every_domain_error_has_its_row_of_the_error_table():
    """A domain error without a row would be a 500: DOMAIN_ERRORS is keyed by
    class name, so a renamed or new class must be listed."""
    classes = [
        cls
        for _, cls in inspect.getmembers(domain_errors, inspect.isclass)
        if issubclass(cls, domain_errors.WorkflowsError) and cls is not domain_errors.WorkflowsError
    ]
    assert classes
    for cls in classes:
        assert cls.__name__ in errors.DOMAIN_ERRORS, cls
        assert errors.domain_api_error(cls("x")) is not None, cls
    assert set(errors.DOMAIN_ERRORS) <= {cls.__name__ for cls in classes}


def test_an_existing_name_is_still_the_import_s_own_400(operator):
    make_workflow("hello", [("result", "output", {"value": 1})])
    response = operator.post("workflows/import/", document("other") | {"name": "hello"})
    assert response.status_code == 400


def test_a_url_without_its_trailing_slash_is_the_same_endpoint_not_an_html_redirect(operator):
    listed = operator.get("apis")
    assert listed.status_code == 200 and listed["Content-Type"] == "application/json"
    created = operator.post("workflows/import", document("slashless"))
    assert created.status_code == 201, created.content[:200]
