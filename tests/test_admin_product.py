"""The admin's product features: API List counts and buttons, Workflow List stats
and runs, the workflow graph, execution filters and buttons, the dashboard, and
what they cost on a large table."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import make_api, make_workflow
from tests.support.queue import drain_queue
from triggers import admin as trigger_admin
from triggers.models import ApiDefinition, AuthMode, TriggerStat
from triggers.selectors import api_curl_example
from triggers.services import TriggerCall, api_call, api_set_enabled
from workflows.admin import LimitedCountPaginator
from workflows.graph import definition_svg
from workflows.models import Execution, ExecutionStatus

pytestmark = pytest.mark.django_db


def trigger(caller, path="/v1/api/shop/order/async", **headers):
    return caller.post(path, data="{}", content_type="application/json", headers=headers)


def test_a_refused_call_is_counted_and_an_accepted_one_writes_no_stat(caller, token_api):
    assert trigger(caller, "/v1/api/shop/secure/async", token="wrong").status_code == 401
    assert trigger(caller, "/v1/api/shop/secure/async", token="wrong").status_code == 401
    assert trigger(caller, "/v1/api/shop/nothing/async").status_code == 404
    assert trigger(caller, "/v1/api/shop/secure/async", token=token_api.plain_token).status_code
    stats = {(s.api_id, s.code, s.status): s.refused for s in TriggerStat.objects.all()}
    assert stats == {
        (token_api.pk, "requestError.unauthorized", 401): 2,
        (0, "requestError.notFound", 404): 1,
    }


def test_api_list_shows_last_call_calls_and_failures_of_the_last_day(admin_client, caller):
    failing = make_workflow("boom", [("stop", "fail", {"message": "no"})])
    make_api(failing, module="shop", method="order", auth_mode=AuthMode.NONE)
    for _ in range(3):
        assert trigger(caller).status_code == 202
    api_set_enabled(apis=ApiDefinition.objects.all(), enabled=False)
    assert trigger(caller).status_code == 403
    drain_queue()
    page = admin_client.get("/admin/triggers/apidefinition/").content.decode()
    assert 'class="field-calls_24h"><a href="/admin/workflows/execution/?api__id__exact=' in page
    assert ">3</a>" in page
    assert "3</span> / <span" in page and "1 refused" in page
    assert " s ago</a>" in page
    assert 'data-copy="http://localhost:8000/v1/api/shop/order/async"' in page


def test_enable_switch_turns_an_api_off_through_the_service(admin_client, open_api, caller):
    assert trigger(caller).status_code == 202  # the API is cached now
    response = admin_client.post(
        f"/admin/triggers/apidefinition/{open_api.pk}/enabled/", {"enabled": "0"}
    )
    assert response.status_code == 302
    open_api.refresh_from_db()
    assert open_api.enabled is False
    assert trigger(caller).status_code == 403  # the cache was cleared
    assert admin_client.get(f"/admin/triggers/apidefinition/{open_api.pk}/enabled/").status_code


def test_debug_button_fires_the_debug_payload_and_shows_the_run(
    admin_client, token_api, monkeypatch
):
    monkeypatch.setattr(trigger_admin, "DEBUG_WAIT_SECONDS", 0)
    ApiDefinition.objects.filter(pk=token_api.pk).update(debug_payload={"item": "lamp"})
    response = admin_client.post(f"/admin/triggers/apidefinition/{token_api.pk}/debug/")
    execution = Execution.objects.get()
    assert response["Location"] == f"/admin/workflows/execution/{execution.uid}/change/"
    assert execution.api_id == token_api.pk and execution.input["body"] == {"item": "lamp"}
    drain_queue()
    page = admin_client.get(response["Location"]).content.decode()
    assert "iol-badge iol-succeeded" in page and 'data-key="shape"' in page


def test_debug_button_of_a_disabled_api_is_refused_like_a_caller(admin_client, open_api):
    api_set_enabled(apis=ApiDefinition.objects.all(), enabled=False)
    response = admin_client.post(f"/admin/triggers/apidefinition/{open_api.pk}/debug/", follow=True)
    assert "Debug call of shop/order refused: API shop/order is not enabled" in (
        response.content.decode()
    )
    assert not Execution.objects.exists()
    assert TriggerStat.objects.get().code == "requestError.apiDisabled"


def test_curl_example_follows_the_auth_mode_and_verb(echo_workflow):
    api = make_api(echo_workflow, auth_mode=AuthMode.TOKEN, debug_payload={"n": 1})
    assert api_curl_example(api) == (
        "curl -i -X POST -H 'content-type: application/json' -H 'token: <your token>' "
        "-d '{\"n\": 1}' http://localhost:8000/v1/api/shop/order/async"
    )
    api.auth_mode, api.auth_user, api.http_method = AuthMode.PASSWORD, "svc", "GET"
    assert api_curl_example(api) == (
        "curl -i -H 'user: svc' -H 'password: <your password>' "
        "'http://localhost:8000/v1/api/shop/order/async?n=1'"
    )


def test_workflow_list_shows_last_run_status_and_success_rate(admin_client, open_api, caller):
    for _ in range(2):
        trigger(caller)
    drain_queue()
    page = admin_client.get("/admin/workflows/workflow/").content.decode()
    assert "iol-badge iol-succeeded" in page
    assert 'title="2 of 2 finished runs in the last 24 h">100%' in page


def test_run_action_starts_a_run_with_the_json_input(admin_client, echo_workflow):
    form = admin_client.post(
        "/admin/workflows/workflow/",
        {"action": "run_selected", "_selected_action": [echo_workflow.pk]},
    )
    assert form.status_code == 200 and 'name="input"' in form.content.decode()
    data = {
        "action": "run_selected",
        "_selected_action": [echo_workflow.pk],
        "run_input": "1",
        "input": "[1]",
    }
    refused = admin_client.post("/admin/workflows/workflow/", data)
    assert "The input must be a JSON object." in refused.content.decode()
    data["input"] = '{"item": "lamp"}'
    done = admin_client.post("/admin/workflows/workflow/", data, follow=True)
    assert "Started echo: run" in done.content.decode()
    drain_queue()
    execution = Execution.objects.get()
    assert execution.status == ExecutionStatus.SUCCEEDED
    assert execution.output["body"] == {"item": "lamp"}


def test_graph_draws_steps_jumps_branches_and_loop_bodies():
    svg = definition_svg(
        {
            "steps": [
                {
                    "key": "check",
                    "type": "condition",
                    "config": {"cases": [{"when": "{{ body.x }}", "next": "each"}]},
                },
                {"key": "plain", "type": "transform", "config": {"value": 1}, "next": "end"},
                {
                    "key": "each",
                    "type": "loop",
                    "config": {
                        "items": "{{ body.items }}",
                        "steps": [{"key": "one", "type": "transform", "config": {"value": 1}}],
                    },
                    "on_error": "branch",
                    "error_next": "oops",
                },
                {"key": "oops", "type": "output", "config": {"value": "<b>"}},
            ]
        }
    )
    assert svg.startswith("<svg") and svg.count('class="iol-node"') == 5
    assert 'data-key="each.one"' in svg and "for each item" in svg
    assert ">case 0<" in svg and ">next<" in svg and ">error<" in svg and ">End<" in svg
    assert "<b>" not in svg and "&lt;b&gt;" in svg  # configs are escaped in tooltips


def test_workflow_page_shows_the_graph(admin_client, open_api):
    page = admin_client.get(f"/admin/workflows/workflow/{open_api.workflow_id}/change/")
    assert 'class="iol-graph"' in page.content.decode()


def test_execution_list_filters_by_time_range_api_and_status(admin_client, open_api, caller):
    other = make_api(open_api.workflow, method="other", auth_mode=AuthMode.NONE)
    trigger(caller)
    trigger(caller, "/v1/api/shop/other/async")
    mine = Execution.objects.get(api=open_api).uid
    old = Execution.objects.get(api=other)
    Execution.objects.filter(uid=old.uid).update(uid=old.uid - (10**9 << 22))  # ~12 days ago
    url = "/admin/workflows/execution/"
    page = admin_client.get(url, {"since": "24h"}).content.decode()
    assert str(mine) in page and str(old.uid - (10**9 << 22)) not in page
    page = admin_client.get(url, {"api__id__exact": other.pk}).content.decode()
    assert str(mine) not in page
    page = admin_client.get(url, {"status__exact": "succeeded"}).content.decode()
    assert str(mine) not in page


def test_execution_list_never_counts_the_whole_table(admin_client, open_api, caller, monkeypatch):
    monkeypatch.setattr(LimitedCountPaginator, "LIMIT", 3)
    monkeypatch.setattr("workflows.admin.ExecutionAdmin.list_per_page", 2)
    for _ in range(5):
        trigger(caller)
    with CaptureQueriesContext(connection) as ctx:
        page = admin_client.get("/admin/workflows/execution/", {"since": "1h"})
    assert "more than 3 executions" in page.content.decode()
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


def test_execution_page_buttons_rerun_and_cancel_through_the_lifecycle(
    admin_client, open_api, caller
):
    uid = trigger(caller).json()["response"]["uid"]
    page = admin_client.get(f"/admin/workflows/execution/{uid}/change/").content.decode()
    assert 'id="iol-cancel"' in page and 'id="iol-rerun"' in page
    assert admin_client.get(f"/admin/workflows/execution/{uid}/cancel/").status_code == 405
    admin_client.post(f"/admin/workflows/execution/{uid}/cancel/")
    assert Execution.objects.get(uid=uid).status == ExecutionStatus.CANCELLED
    response = admin_client.post(f"/admin/workflows/execution/{uid}/rerun/")
    new = Execution.objects.get(rerun_of_id=uid)
    assert response["Location"] == f"/admin/workflows/execution/{new.uid}/change/"
    page = admin_client.get(f"/admin/workflows/execution/{uid}/change/").content.decode()
    assert 'id="iol-cancel"' not in page  # a finished run cannot be cancelled


def test_dashboard_shows_triggers_runs_queue_and_durations(admin_client, open_api, caller):
    for _ in range(3):
        trigger(caller)
    drain_queue()
    trigger(caller)  # still queued
    trigger(caller, "/v1/api/shop/none/async")  # refused: 404
    response = admin_client.get("/admin/")
    stats = response.context["dashboard"]
    assert stats["triggers_accepted"] == {"hour": 4, "day": 4}
    assert stats["triggers_refused"] == {"hour": 1, "day": 1}
    assert stats["statuses"]["succeeded"] == {"hour": 3, "day": 3}
    assert stats["queue"]["queued"] == 1
    assert stats["durations"]["hour"]["sample"] == 3
    assert stats["durations"]["hour"]["p95"] is not None
    assert sum(m["runs"] for m in stats["per_minute"]) == 4
    page = response.content.decode()
    assert 'id="iol-dashboard"' in page and 'class="iol-chart"' in page


def test_dashboard_costs_the_same_queries_for_few_or_many_runs(admin_client, open_api):
    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get("/admin/").status_code == 200
        return len(ctx.captured_queries)

    api_call(module="shop", method="order", call=TriggerCall(headers={}))
    few = queries()
    for _ in range(20):
        api_call(module="shop", method="order", call=TriggerCall(headers={}))
    drain_queue()
    assert queries() == few
