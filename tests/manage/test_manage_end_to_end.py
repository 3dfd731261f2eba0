"""The management API through the real web server (granian and its RSGI front)
and a real qcluster: the CI flow of the README, from a workflow document to its
run read back, with the ORM broker and again with Redis."""

import time

import httpx
import pytest
from django.contrib.auth.models import User

from triggers.manage.auth import manage_token_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GREET = {
    "format": "iolinker.workflow",
    "formatVersion": 1,
    "name": "greet",
    "steps": [{"key": "result", "type": "output", "config": {"value": {"hi": "{{ body.name }}"}}}],
}


# `platform`: tests/test_end_to_end.py's (the ORM broker, then Redis), by conftest.py.
def test_a_pipeline_imports_a_workflow_binds_an_api_and_reads_its_run(platform):
    token = manage_token_create(user=User.objects.create_superuser("ci"), days=1)
    manage = httpx.Client(
        base_url=f"{platform.base_url}/v1/manage",
        headers={"authorization": f"Token {token}"},
        timeout=10,
    )
    imported = manage.post("/workflows/import/", json=GREET)
    assert imported.status_code == 201, imported.text
    workflow = imported.json()["response"]["imported"][0]["id"]
    created = manage.post("/apis/", json={"module": "ci", "method": "greet", "workflow": workflow})
    assert created.status_code == 201, created.text
    api = created.json()["response"]
    called = httpx.post(
        f"{platform.base_url}/v1/api/ci/greet/async",
        json={"name": "CI"},
        headers={"token": api["token"]},
        timeout=10,
    )
    assert called.status_code == 202, called.text
    uid = called.json()["response"]["uid"]
    deadline = time.monotonic() + 30
    while True:
        detail = manage.get(f"/executions/{uid}/").json()["response"]
        if detail["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert detail["status"] == "succeeded" and detail["output"] == {"hi": "CI"}
    listed = manage.get("/executions/", params={"api": api["id"], "status": "succeeded"})
    assert [r["uid"] for r in listed.json()["response"]["results"]] == [uid]
    assert manage.post(f"/apis/{api['id']}/disable/").json()["response"]["enabled"] is False
    refused = httpx.post(
        f"{platform.base_url}/v1/api/ci/greet/async", json={}, headers={"token": api["token"]}
    )
    assert refused.status_code == 403
    exported = manage.get(f"/workflows/{workflow}/export/").json()
    assert exported["steps"] == GREET["steps"] and exported["name"] == "greet"
    anonymous = httpx.get(f"{platform.base_url}/v1/manage/executions/")
    assert anonymous.status_code == 401
    assert anonymous.json()["response"]["error"]["code"] == "requestError.unauthorized"
