"""The admin in a real browser: Playwright driving Debian's chromium against a live server.

Needs `apt-get install chromium` (never `playwright install`: no browser download).
Without it the tests skip with the reason, and fail under IOLINKER_REQUIRE_SERVICES=1.
With IOLINKER_SCREENSHOTS=1 they also save the main pages into docs/screenshots/.
"""

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.conftest import needs_service
from tests.support.environment import BASE_DIR
from tests.support.queue import drain_queue
from triggers.models import ApiDefinition, TriggerStat
from workflows.models import Execution, ExecutionStatus
from workflows.services import workflow_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = os.environ.get("IOLINKER_SCREENSHOTS") == "1"
SCREENSHOT_DIR = BASE_DIR / "docs" / "screenshots"


def chromium_path() -> str | None:
    """Debian's chromium, or the browser named by IOLINKER_CHROMIUM."""
    names = [os.environ.get("IOLINKER_CHROMIUM") or "chromium", "chromium-browser"]
    return next(filter(None, (shutil.which(name) for name in names)), None)


@pytest.fixture(scope="module")
def browser():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright is not installed (pip install -e '.[dev]')"
    if reason is None and chromium_path() is None:
        reason = "chromium is not installed (apt-get install chromium)"
    needs_service(reason)
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # tests make beside it are synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), args=["--no-sandbox"]
            )
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser, live_server, settings, admin_user):
    settings.IOLINKER_BASE_URL = live_server.url
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 1720, "height": 960},
        permissions=["clipboard-read", "clipboard-write"],
    )
    # Django's navigation sidebar folded: the lists get the width.
    context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def worker():
    """The queue drained in this process while the test runs, as a qcluster would."""
    stop = threading.Event()

    def loop():
        try:
            while not stop.wait(0.1):
                drain_queue()
        finally:
            connection.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def shot(page, name: str, *, full_page: bool = True) -> None:
    if SCREENSHOTS:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=full_page)


def log_in(page) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#iol-dashboard")


def add_step(page, index: int, *, key: str, type: str, config: str, next: str = "") -> None:
    page.click(".inline-group#steps-group .add-row a")
    prefix = f"steps-{index}-"
    page.fill(f"[name={prefix}position]", str(index + 1))
    page.fill(f"[name={prefix}key]", key)
    page.select_option(f"[name={prefix}type]", type)
    page.fill(f"[name={prefix}config]", config)
    if next:
        page.fill(f"[name={prefix}next]", next)


def create_workflow(page) -> None:
    page.goto("/admin/workflows/workflow/add/")
    page.fill("#id_name", "greet")
    add_step(
        page,
        0,
        key="hello",
        type="transform",
        config='{"value": {"greeting": "Hello, {{ body.name }}!"}}',
    )
    add_step(page, 1, key="result", type="output", config='{"value": "{{ steps.hello }}"}')
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")


def create_token_api(page) -> str:
    page.goto("/admin/triggers/apidefinition/add/")
    page.fill("#id_module", "shop")
    page.fill("#id_method", "greet")
    page.select_option("#id_workflow", label="greet")
    page.select_option("#id_auth_mode", "token")
    page.fill("#id_debug_payload", '{"name": "Ada"}')
    page.click("input[name=_save]")
    message = page.locator(".messagelist .warning", has_text="Token for shop/greet")
    return message.locator("code").inner_text()


def wait_for_status(page, status: str) -> None:
    """Reload the run's page until it shows ``status`` (the worker thread runs it)."""
    for _ in range(50):
        if page.locator(f".field-status_badge .iol-{status}").count():
            return
        page.wait_for_timeout(200)
        page.reload()
    raise AssertionError(f"the run never showed {status}")


def test_an_operator_builds_an_api_debugs_it_switches_it_off_and_reruns_a_run(
    page, live_server, worker
):
    log_in(page)

    # A workflow with two steps, drawn as a graph on its page.
    create_workflow(page)
    assert page.locator("svg.iol-graph g.iol-node").count() == 2
    assert page.locator("svg.iol-graph [data-key=hello]").count() == 1

    # A token API bound to it: the token is shown once, then never again.
    token = create_token_api(page)
    assert len(token) > 30
    api = ApiDefinition.objects.get(module="shop", method="greet")
    assert token not in api.token_hash
    page.goto(f"/admin/triggers/apidefinition/{api.pk}/change/")
    assert token not in page.content()
    assert "token: &lt;your token&gt;" in page.locator(".field-curl_example pre").inner_html()

    # Its full URL, copied from the list with the copy button.
    url = f"{live_server.url}/v1/api/shop/greet/async"
    page.goto("/admin/triggers/apidefinition/")
    button = page.locator(".field-url_with_copy button.iol-copy")
    assert button.get_attribute("data-copy") == url
    button.click()
    page.wait_for_selector(".field-url_with_copy button.iol-copy.done")
    assert page.evaluate("navigator.clipboard.readText()") == url

    # A caller with the token is accepted.
    accepted = httpx.post(url, headers={"token": token}, json={"name": "Bob"}, timeout=10)
    assert accepted.status_code == 202, accepted.text

    # Debug: the debug payload through the trigger service, landing on the run.
    page.goto(f"/admin/triggers/apidefinition/{api.pk}/change/")
    page.click("#iol-debug")
    page.wait_for_url("**/admin/workflows/execution/*/change/")
    wait_for_status(page, "succeeded")
    steps = page.locator("table.iol-timeline tr.iol-step")
    assert [steps.nth(i).get_attribute("data-key") for i in range(steps.count())] == [
        "hello",
        "result",
    ]
    assert "Hello, Ada!" in page.locator(".field-output_json").inner_text()
    debug_uid = page.url.rstrip("/").split("/")[-2]
    assert Execution.objects.get(uid=debug_uid).input["body"] == {"name": "Ada"}

    # Switched off in the list: callers are refused with the 403 envelope.
    page.goto("/admin/triggers/apidefinition/")
    page.click(".field-enabled_switch button.iol-switch.on")
    page.wait_for_selector(".field-enabled_switch button.iol-switch:not(.on)")
    refused = httpx.post(url, headers={"token": token}, json={}, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["response"]["error"]["code"] == "requestError.apiDisabled"
    assert TriggerStat.objects.get(api_id=api.pk).refused == 1

    # Search a run by its exact uid, then re-run it.
    page.goto("/admin/workflows/execution/")
    page.fill("#searchbar", debug_uid)
    page.press("#searchbar", "Enter")
    page.wait_for_url(f"**/admin/workflows/execution/?q={debug_uid}")
    rows = page.locator("#result_list tbody tr")
    rows.first.wait_for()
    assert rows.count() == 1
    rows.first.locator("th a, td a").first.click()
    page.click("#iol-rerun")
    page.wait_for_selector(".messagelist .success")
    assert f"{debug_uid} re-run as" in page.locator(".messagelist").inner_text()
    rerun_uid = page.url.rstrip("/").split("/")[-2]
    assert rerun_uid != debug_uid
    wait_for_status(page, "succeeded")
    assert Execution.objects.get(uid=rerun_uid).rerun_of_id == int(debug_uid)

    # The dashboard counts it all: two accepted triggers (the call and Debug), one refusal.
    page.goto("/admin/")
    triggers = page.locator("#iol-triggers").inner_text()
    assert "accepted\t2" in triggers.replace(" ", "\t") or "accepted 2" in triggers
    assert "refused\t1" in triggers.replace(" ", "\t") or "refused 1" in triggers


def test_main_pages_render_for_screenshots(page, worker):
    """The pages the README shows (saved with IOLINKER_SCREENSHOTS=1)."""
    workflow = workflow_create(
        name="orders",
        description="Route an order: VIP orders get a quote per item, others a plain answer.",
        steps=[
            {
                "key": "check",
                "type": "condition",
                "config": {"cases": [{"when": "{{ body.vip }}", "next": "quote"}]},
            },
            {"key": "plain", "type": "transform", "config": {"value": "plain"}, "next": "reply"},
            {
                "key": "quote",
                "type": "loop",
                "config": {
                    "items": "{{ body['items'] }}",
                    "steps": [
                        {"key": "price", "type": "transform", "config": {"value": "{{ item }}"}},
                        {"key": "tax", "type": "code", "config": {"code": "return 1"}},
                    ],
                },
                "on_error": "branch",
                "error_next": "apology",
            },
            {"key": "reply", "type": "output", "config": {"value": "{{ steps }}"}, "next": "end"},
            {"key": "apology", "type": "output", "config": {"value": "sorry"}},
        ],
    )
    api = ApiDefinition.objects.create(
        module="shop",
        method="order",
        workflow=workflow,
        auth_mode="token",
        debug_payload={"vip": True, "items": [1, 2, 3]},
    )
    ApiDefinition.objects.create(
        module="crm", method="lookup", http_method="GET", workflow=workflow, auth_mode="none"
    )
    from triggers.services import api_fire

    for payload in ({"vip": True, "items": [1, 2]}, {"vip": False}, {"vip": True, "items": 5}):
        api_fire(api=api, payload=payload)
    for _ in range(50):
        if not Execution.objects.filter(status=ExecutionStatus.QUEUED).exists():
            break
        page.wait_for_timeout(100)
    log_in(page)
    shot(page, "dashboard")
    page.goto("/admin/triggers/apidefinition/")
    assert page.locator("#result_list tbody tr").count() == 2
    shot(page, "api-list")
    page.goto(f"/admin/triggers/apidefinition/{api.pk}/change/")
    assert page.locator("#iol-debug").is_visible()
    shot(page, "api-change")
    page.goto("/admin/workflows/workflow/")
    shot(page, "workflow-list")
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    assert page.locator("svg.iol-graph g.iol-node").count() == 7  # 5 steps + 2 in the loop
    page.locator("fieldset:has(.field-graph)").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -60)")
    shot(page, "workflow-graph", full_page=False)
    first = Execution.objects.order_by("uid").first()
    page.goto(f"/admin/workflows/execution/{first.uid}/change/")
    assert page.locator("table.iol-timeline tr.iol-step").count() >= 4
    shot(page, "execution-timeline")
    page.goto("/admin/workflows/execution/")
    shot(page, "execution-list")
    assert Path(SCREENSHOT_DIR).exists() or not SCREENSHOTS
