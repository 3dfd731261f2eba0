"""The management API (/v1/manage/, triggers/manage/): who may call it, the
APIs endpoints, its schema and the token command. Workflows and runs:
test_manage_runs.py beside this file."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from knox.models import AuthToken
from openapi_spec_validator import validate

from tests.conftest import make_api, make_workflow
from tests.manage.conftest import BASE, ManageClient, body, error
from triggers.manage.auth import manage_token_create
from triggers.models import ApiDefinition, AuthMode

pytestmark = pytest.mark.django_db

ECHO = [("result", "output", {"value": "{{ body }}"})]


@pytest.fixture
def workflow(db):
    return make_workflow("echo", ECHO)


def trigger(api_path: str, payload: dict, **headers):
    return Client().post(
        api_path, data=json.dumps(payload), content_type="application/json", headers=headers
    )


# --- Who may call it -------------------------------------------------------------

ENDPOINTS = [
    ("get", "apis/"),
    ("post", "apis/"),
    ("get", "apis/1/"),
    ("patch", "apis/1/"),
    ("put", "apis/1/"),
    ("post", "apis/1/enable/"),
    ("post", "apis/1/disable/"),
    ("post", "apis/1/rotate-token/"),
    ("post", "apis/1/rotate-callback-secret/"),
    ("get", "workflows/"),
    ("get", "workflows/1/"),
    ("get", "workflows/1/export/"),
    ("post", "workflows/import/"),
    ("get", "executions/"),
    ("get", "executions/1/"),
    ("post", "executions/1/rerun/"),
    ("post", "executions/1/cancel/"),
    ("get", "schema/"),
    ("get", "docs/"),
]


@pytest.mark.parametrize(("verb", "path"), ENDPOINTS)
def test_anonymous_callers_get_401_with_the_token_scheme(anonymous, verb, path):
    response = anonymous.call(verb, path, {} if verb != "get" else None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert error(response)["code"] == "requestError.unauthorized"


@pytest.mark.parametrize("token", ["wrong", "a" * 64, "\u00e9t\u00e9"])
def test_a_wrong_token_is_401(db, token):
    response = ManageClient(token).get("apis/")
    assert response.status_code == 401
    assert error(response) == {"code": "requestError.unauthorized", "message": "Invalid token."}


def test_a_token_of_a_user_no_longer_staff_or_active_is_refused(db):
    user = User.objects.create_user("former", is_staff=True)
    client = ManageClient(manage_token_create(user=user, days=None))
    user.is_staff = False
    user.save()
    assert client.get("apis/").status_code == 403
    user.is_active = False
    user.save()
    assert client.get("apis/").status_code == 401


def test_an_expired_token_is_refused_and_deleted(db):
    user = User.objects.create_superuser("late")
    client = ManageClient(manage_token_create(user=user, days=1))
    AuthToken.objects.update(expiry=AuthToken.objects.get().created - timedelta(seconds=1))
    assert client.get("apis/").status_code == 401
    assert not AuthToken.objects.exists()


def test_tokens_are_stored_as_digests_only(db):
    token = manage_token_create(user=User.objects.create_superuser("root"), days=None)
    stored = AuthToken.objects.get()
    assert token not in (stored.digest, stored.token_key) and len(stored.digest) == 128


def test_staff_without_the_model_permission_is_403(db):
    user = User.objects.create_user("nobody", is_staff=True)
    client = ManageClient(manage_token_create(user=user, days=None))
    for path in ("apis/", "workflows/", "executions/"):
        response = client.get(path)
        assert response.status_code == 403
        assert error(response)["code"] == "requestError.forbidden"


@pytest.mark.parametrize(
    ("verb", "path"),
    [
        ("post", "apis/"),
        ("patch", "apis/{api}/"),
        ("put", "apis/{api}/"),
        ("post", "apis/{api}/enable/"),
        ("post", "apis/{api}/disable/"),
        ("post", "apis/{api}/rotate-token/"),
        ("post", "apis/{api}/rotate-callback-secret/"),
        ("post", "workflows/import/"),
    ],
)
def test_view_only_staff_can_read_but_not_change(viewer, workflow, verb, path):
    api = make_api(workflow, auth_mode=AuthMode.TOKEN, enabled=True)
    before = ApiDefinition.objects.values().get()
    assert viewer.get("apis/").status_code == 200
    assert viewer.get(f"apis/{api.pk}/").status_code == 200
    response = viewer.call(verb, path.format(api=api.pk), {"description": "changed"})
    assert response.status_code == 403, response.content
    assert error(response)["code"] == "requestError.forbidden"
    assert ApiDefinition.objects.values().get() == before


def test_the_admin_session_works_with_its_csrf_token(workflow):
    User.objects.create_superuser("admin", "", "pw")
    client = Client(enforce_csrf_checks=True)
    client.login(username="admin", password="pw")
    session = ManageClient(client=client)
    api = make_api(workflow)
    assert session.get("apis/").status_code == 200
    refused = session.post(f"apis/{api.pk}/disable/", {})
    assert refused.status_code == 403 and "CSRF" in error(refused)["message"]
    client.get("/admin/")  # sets the CSRF cookie
    allowed = session.post(
        f"apis/{api.pk}/disable/", {}, **{"x-csrftoken": client.cookies["csrftoken"].value}
    )
    assert allowed.status_code == 200, allowed.content
    assert body(allowed)["enabled"] is False


def test_unknown_urls_and_verbs_answer_the_envelope(operator, workflow):
    api = make_api(workflow)
    missing = operator.get("nothing/")
    assert missing.status_code == 404 and error(missing)["code"] == "requestError.notFound"
    assert operator.get("apis/999/").status_code == 404
    assert operator.get("apis/abc/").status_code == 404
    delete = operator.call("delete", f"apis/{api.pk}/")
    assert delete.status_code == 405
    assert error(delete)["code"] == "requestError.methodNotAllowed"
    assert "DELETE" not in delete["Allow"] and "PATCH" in delete["Allow"]
    bad = operator.client.post(
        f"{BASE}/apis/",
        data="{not json",
        content_type="application/json",
        headers={"authorization": f"Token {operator.token}"},
    )
    assert bad.status_code == 400 and error(bad)["code"] == "requestError.invalidParams"


# --- APIs ------------------------------------------------------------------------


def test_a_token_api_created_through_the_api_answers_its_token_once(operator, workflow):
    response = operator.post(
        "apis/", {"module": "shop", "method": "order", "workflow": workflow.pk}
    )
    assert response.status_code == 201, response.content
    created = body(response)
    token = created["token"]
    api = ApiDefinition.objects.get(pk=created["id"])
    assert api.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert created["authMode"] == "token" and created["hasSecret"] is True
    assert created["url"].endswith("/v1/api/shop/order/async")
    assert "token" not in body(operator.get(f"apis/{api.pk}/"))
    assert trigger(api.path, {"n": 1}, token=token).status_code == 202
    assert trigger(api.path, {"n": 1}, token="wrong").status_code == 401


def test_no_secret_or_digest_is_ever_read_back(operator, workflow):
    created = body(
        operator.post(
            "apis/",
            {
                "module": "shop",
                "method": "private",
                "workflow": workflow.pk,
                "authMode": "password",
                "authUser": "alice",
                "password": "s3cret-pass",
                "callbackUrl": "https://example.com/hook",
            },
        )
    )
    api = ApiDefinition.objects.get(pk=created["id"])
    assert created["callbackSecret"] == api.callback_secret and "token" not in created
    listed = operator.get("apis/").content.decode()
    shown = json.dumps({k: v for k, v in created.items() if k != "callbackSecret"})
    for secret in (api.password_hash, api.callback_secret, "s3cret-pass"):
        assert secret not in listed and secret not in shown
    assert trigger(api.path, {}, user="alice", password="s3cret-pass").status_code == 202


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"authMode": "password", "authUser": "alice"}, "password: Set a password"),
        ({"authMode": "password", "password": "x"}, "authUser: User + password"),
        ({"module": "bad name"}, "module: Letters, digits"),
        ({"syncTimeout": 301}, "syncTimeout:"),
        ({"ipAllowlist": "not-an-ip"}, "ipAllowlist: not-an-ip is not an IP"),
        ({"callbackUrl": "ftp://example.com/"}, "callbackUrl:"),
        ({"workflow": 999}, "workflow:"),
        ({"method": "order"}, "must make a unique set"),
    ],
)
def test_invalid_apis_are_400_and_nothing_is_written(operator, workflow, data, problem):
    make_api(workflow, module="shop", method="order")
    before = list(ApiDefinition.objects.values())
    response = operator.post(
        "apis/", {"module": "shop", "method": "new", "workflow": workflow.pk, **data}
    )
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "requestError.invalidParams"
    assert problem in error(response)["message"]
    assert list(ApiDefinition.objects.values()) == before


def test_an_api_is_updated_and_a_switch_to_token_auth_issues_a_token(operator, workflow):
    api = make_api(workflow, auth_mode=AuthMode.NONE)
    response = operator.patch(f"apis/{api.pk}/", {"description": "orders", "syncEnabled": True})
    assert response.status_code == 200 and "token" not in body(response)
    api.refresh_from_db()
    assert api.description == "orders" and api.sync_enabled
    switched = body(operator.patch(f"apis/{api.pk}/", {"authMode": "token"}))
    assert trigger(api.path, {}, token=switched["token"]).status_code == 202
    assert trigger(api.path, {}).status_code == 401
    replaced = operator.put(
        f"apis/{api.pk}/",
        {"module": "shop", "method": "renamed", "workflow": workflow.pk, "authMode": "none"},
    )
    assert replaced.status_code == 200 and body(replaced)["method"] == "renamed"


def test_disable_and_enable_switch_the_api_at_once(operator, workflow):
    api = make_api(workflow, auth_mode=AuthMode.NONE)
    assert trigger(api.path, {}).status_code == 202
    disabled = operator.post(f"apis/{api.pk}/disable/")
    assert disabled.status_code == 200 and body(disabled)["enabled"] is False
    refused = trigger(api.path, {})
    assert refused.status_code == 403 and "apiDisabled" in refused.content.decode()
    assert body(operator.post(f"apis/{api.pk}/enable/"))["enabled"] is True
    assert trigger(api.path, {}).status_code == 202


def test_rotating_a_token_stops_the_old_one(operator, workflow):
    api = make_api(workflow, auth_mode=AuthMode.TOKEN)
    first = body(operator.post(f"apis/{api.pk}/rotate-token/"))["token"]
    second = body(operator.post(f"apis/{api.pk}/rotate-token/"))["token"]
    assert first != second
    assert trigger(api.path, {}, token=first).status_code == 401
    assert trigger(api.path, {}, token=second).status_code == 202


def test_only_token_apis_have_a_token_to_rotate(operator, workflow):
    api = make_api(workflow, auth_mode=AuthMode.NONE)
    response = operator.post(f"apis/{api.pk}/rotate-token/")
    assert response.status_code == 400
    assert "does not use token authentication" in error(response)["message"]


def test_rotating_the_callback_secret_answers_the_new_one(operator, workflow):
    api = make_api(workflow, callback_url="https://example.com/hook", callback_secret="whsec_x")
    secret = body(operator.post(f"apis/{api.pk}/rotate-callback-secret/"))["callbackSecret"]
    api.refresh_from_db()
    assert secret.startswith("whsec_") and api.callback_secret == secret


def test_apis_are_listed_by_cursor_and_filtered(operator, workflow):
    other = make_workflow("other", ECHO)
    for n in range(5):
        make_api(workflow if n % 2 else other, module="m", method=f"a{n}", enabled=n != 4)
    with CaptureQueriesContext(connection) as queries:
        first = body(operator.get("apis/?limit=2"))
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]  # none
    assert [a["method"] for a in first["results"]] == ["a0", "a1"] and first["previous"] is None
    second = body(operator.get(first["next"]))
    assert [a["method"] for a in second["results"]] == ["a2", "a3"]
    assert [a["method"] for a in body(operator.get("apis/?enabled=false"))["results"]] == ["a4"]
    by_workflow = body(operator.get(f"apis/?workflow={workflow.pk}"))["results"]
    assert [a["method"] for a in by_workflow] == ["a1", "a3"]
    assert body(operator.get("apis/?method=a2"))["results"][0]["workflowName"] == "other"


# --- Its schema and the token command ----------------------------------------------


def test_the_schema_describes_the_management_api_only(operator):
    response = operator.get("schema/")
    assert response.status_code == 200
    document = json.loads(response.content)
    validate(document)
    paths = set(document["paths"])
    assert {"/v1/manage/apis/", "/v1/manage/executions/{uid}/cancel/"} <= paths
    assert "/v1/manage/workflows/import/" in paths
    assert not [p for p in paths if not p.startswith("/v1/manage/")]
    listing = document["paths"]["/v1/manage/executions/"]["get"]
    assert {"status", "api", "workflow", "createdAfter", "cursor", "limit"} <= {
        p["name"] for p in listing["parameters"]
    }
    ok = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["properties"]["response"]["$ref"].endswith("PaginatedExecutionList")
    assert "401" in listing["responses"]


def test_the_docs_page_loads_swagger_ui_from_our_own_static_files(operator):
    page = operator.get("docs/")
    assert page.status_code == 200 and b"swagger-ui" in page.content
    assert b"/static/drf_spectacular_sidecar/" in page.content
    assert b"cdn." not in page.content and b"unpkg" not in page.content


def test_the_caller_document_stays_the_per_api_one(operator, workflow):
    make_api(workflow)
    document = json.loads(Client().get("/v1/openapi.json").content)
    assert "/v1/api/shop/order/async" in document["paths"]
    assert not [p for p in document["paths"] if p.startswith("/v1/manage")]


def test_the_token_command_prints_a_working_token_and_revokes(db, capsys):
    User.objects.create_user("ci", is_staff=True)
    call_command("manage_token", "ci", "--days", "30")
    token = capsys.readouterr().out.strip()
    assert ManageClient(token).get("apis/").status_code == 403  # authenticated, no permission
    call_command("manage_token", "ci", "--revoke")
    assert "Revoked 1" in capsys.readouterr().out
    assert ManageClient(token).get("apis/").status_code == 401
    User.objects.create_user("plain")
    with pytest.raises(CommandError, match="not an active staff user"):
        call_command("manage_token", "plain")
    with pytest.raises(CommandError, match="No user"):
        call_command("manage_token", "ghost")
