"""The admin lists APIs, workflows with steps, and executions with step runs."""

import pytest

from tests.support.queue import drain_queue
from triggers.models import ApiDefinition
from workflows.models import Execution, Workflow

pytestmark = pytest.mark.django_db


def test_api_list_shows_module_method_verb_auth_state_and_full_url(admin_client, token_api):
    page = admin_client.get("/admin/triggers/apidefinition/").content.decode()
    for text in [
        "shop",
        "secure",
        "POST",
        "Token",
        "http://localhost:8000/v1/api/shop/secure/async",
    ]:
        assert text in page


def test_creating_a_token_api_shows_the_token_once_and_stores_it_hashed(
    admin_client, echo_workflow, caller
):
    response = admin_client.post(
        "/admin/triggers/apidefinition/add/",
        {
            "module": "crm",
            "method": "sync",
            "http_method": "POST",
            "workflow": echo_workflow.pk,
            "enabled": "on",
            "auth_mode": "token",
            "auth_user": "",
            "password": "",
            "debug_payload": "{}",
            "description": "",
            "sync_timeout": "25",
        },
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    token = next(m for m in messages if "Token for crm/sync" in m).split("<code>")[1].split("<")[0]
    api = ApiDefinition.objects.get(module="crm", method="sync")
    assert api.token_hash and token not in api.token_hash
    again = admin_client.get(f"/admin/triggers/apidefinition/{api.pk}/change/").content.decode()
    assert token not in again
    accepted = caller.post(
        "/v1/api/crm/sync/async",
        headers={"token": token},
        data="{}",
        content_type="application/json",
    )
    assert accepted.status_code == 202


def test_password_api_needs_a_password_and_stores_it_hashed(admin_client, echo_workflow):
    data = {
        "module": "crm",
        "method": "login",
        "http_method": "POST",
        "workflow": echo_workflow.pk,
        "enabled": "on",
        "auth_mode": "password",
        "auth_user": "svc",
        "password": "",
        "debug_payload": "{}",
        "description": "",
        "sync_timeout": "25",
    }
    refused = admin_client.post("/admin/triggers/apidefinition/add/", data)
    assert "Set a password" in refused.content.decode()
    data["password"] = "a-long-password"
    admin_client.post("/admin/triggers/apidefinition/add/", data)
    api = ApiDefinition.objects.get(method="login")
    assert api.password_hash.startswith("pbkdf2_sha256$")
    assert "a-long-password" not in str(ApiDefinition.objects.filter(pk=api.pk).values().get())


def test_disable_action_turns_apis_off(admin_client, open_api):
    admin_client.post(
        "/admin/triggers/apidefinition/",
        {"action": "disable_apis", "_selected_action": [open_api.pk]},
    )
    open_api.refresh_from_db()
    assert open_api.enabled is False


def test_workflow_list_and_page_show_steps(admin_client, open_api):
    listing = admin_client.get("/admin/workflows/workflow/").content.decode()
    assert "echo" in listing and "shop/order" in listing
    page = admin_client.get(f"/admin/workflows/workflow/{open_api.workflow.pk}/change/")
    assert "steps.shape" in page.content.decode()


def test_workflow_page_rejects_an_invalid_step_config_on_the_config_field(admin_client):
    response = admin_client.post(
        "/admin/workflows/workflow/add/",
        {
            "name": "broken",
            "description": "",
            "sync_timeout": "25",
            "enabled": "on",
            "steps-TOTAL_FORMS": "1",
            "steps-INITIAL_FORMS": "0",
            "steps-0-position": "1",
            "steps-0-key": "t",
            "steps-0-type": "transform",
            "steps-0-config": '{"valu": 1}',
        },
    )
    assert response.status_code == 200
    assert "&#x27;value&#x27; is a required property" in response.content.decode()
    assert not Workflow.objects.filter(name="broken").exists()


def test_execution_list_and_detail_show_runs_and_step_runs(admin_client, open_api, caller):
    uid = caller.post(
        "/v1/api/shop/order/async", data='{"item": "lamp"}', content_type="application/json"
    ).json()["response"]["uid"]
    drain_queue()
    listing = admin_client.get("/admin/workflows/execution/").content.decode()
    assert uid in listing and "succeeded" in listing
    found = admin_client.get("/admin/workflows/execution/", {"q": uid}).content.decode()
    assert uid in found
    detail = admin_client.get(f"/admin/workflows/execution/{uid}/change/").content.decode()
    assert "lamp" in detail and "shape" in detail and "result" in detail


def test_execution_search_with_a_non_number_finds_nothing_without_error(admin_client, open_api):
    response = admin_client.get("/admin/workflows/execution/", {"q": "not-a-uid"})
    assert response.status_code == 200


def test_executions_are_read_only_in_the_admin(admin_client, open_api, caller):
    caller.post("/v1/api/shop/order/async", data="{}", content_type="application/json")
    uid = Execution.objects.get().uid
    assert admin_client.get("/admin/workflows/execution/add/").status_code == 403
    response = admin_client.post(f"/admin/workflows/execution/{uid}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Execution.objects.filter(uid=uid).exists()


def test_admin_requires_login(client):
    response = client.get("/admin/workflows/execution/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_root_redirects_to_the_admin(client):
    assert client.get("/")["Location"] == "/admin/"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/workflows/execution/",
        "/admin/workflows/execution/?since=24h&status__exact=queued",
        "/admin/triggers/apidefinition/",
        "/admin/workflows/workflow/",
    ],
)
def test_list_pages_cost_the_same_queries_for_5_or_40_rows(admin_client, open_api, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.conftest import make_api, make_workflow
    from triggers.services import TriggerCall, api_call

    def add_rows(count):
        for _ in range(count):
            workflow = make_workflow(f"wf-{Workflow.objects.count()}")
            make_api(workflow, method=f"m{workflow.pk}", auth_mode="none")
            api_call(module="shop", method="order", call=TriggerCall(headers={}))

    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    add_rows(5)
    few = queries()
    add_rows(35)
    assert queries() == few  # no query per row (select_related / prefetch)


def test_publishing_the_debug_payload_is_a_switch_of_the_api_page(admin_client, echo_workflow):
    data = {
        "module": "crm",
        "method": "lead",
        "http_method": "POST",
        "workflow": echo_workflow.pk,
        "enabled": "on",
        "auth_mode": "none",
        "auth_user": "",
        "password": "",
        "debug_payload": '{"email": "ops@example.com"}',
        "description": "",
        "sync_timeout": "25",
    }
    page = admin_client.get("/admin/triggers/apidefinition/add/").content.decode()
    assert 'name="publish_example"' in page
    admin_client.post("/admin/triggers/apidefinition/add/", data)
    api = ApiDefinition.objects.get(method="lead")
    assert api.publish_example is False  # off unless ticked
    assert "ops@example.com" not in admin_client.get("/v1/openapi.json").content.decode()
    admin_client.post(
        f"/admin/triggers/apidefinition/{api.pk}/change/", {**data, "publish_example": "on"}
    )
    api.refresh_from_db()
    assert api.publish_example is True
    assert "ops@example.com" in admin_client.get("/v1/openapi.json").content.decode()


@pytest.mark.parametrize("module", ["shop/x", "", "shop\n", "../etc", "shop x"])
def test_an_api_with_an_invalid_stored_module_keeps_the_admin_pages_working(
    admin_client, open_api, module
):
    # Written by SQL or an older version with names the form now refuses.
    type(open_api).objects.filter(pk=open_api.pk).update(module=module)
    listing = admin_client.get("/admin/triggers/apidefinition/")
    assert listing.status_code == 200
    assert "not a valid URL segment" in listing.content.decode()
    page = admin_client.get(f"/admin/triggers/apidefinition/{open_api.pk}/change/")
    assert page.status_code == 200
    assert "not a valid URL segment" in page.content.decode()
