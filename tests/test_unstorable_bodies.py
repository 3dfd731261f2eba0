"""Bodies the database cannot store or read back are refused alone, at intake,
and never fail the calls committed with them (security issue 12, items 2, 3, 6).

What is accepted is strict UTF-8 JSON nested at most IOLINKER_MAX_JSON_DEPTH
levels, without NUL characters or unpaired surrogates in the decoded value;
what is stored is the text checked in the caller's own request.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import DataError, connection
from django.test import Client, override_settings

from iolinker import errors
from iolinker.errors import ApiError
from tests.support.clients import WsgiClient
from triggers.http.jsonbody import json_too_deep
from workflows.intake import GroupCommit
from workflows.models import Execution
from workflows.services import intake as run_intake

JSON = "application/json"
URL = "/v1/api/shop/order/async"


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


# Each passes json.loads(bytes), which the old check ran: UTF-16/32 and CESU-8
# bodies hid a NUL or a lone surrogate from the raw-byte checks, and ~980
# levels parsed in the request but failed in the committer (or the worker).
BAD_BODIES = {
    "utf16-nul": '{"a": "\\u0000"}'.encode("utf-16"),
    "utf16le-no-bom": '{"a": "x"}'.encode("utf-16-le"),
    "utf32-surrogate": '{"a": "\\ud800"}'.encode("utf-32"),
    "cesu8-surrogate": b'{"a": "\xed\xa0\x80"}',
    "nested-101": nested(101).encode(),
    "nested-980": nested(980).encode(),
    "array-nested-101": ('{"a": ' + "[" * 100 + "]" * 100 + "}").encode(),
}


def assert_invalid(response) -> str:
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == JSON
    error = response.json()["response"]["error"]
    assert error["code"] == "requestError.invalidParams" and error["message"]
    return error["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bodies_in_other_encodings_or_nested_too_deeply_are_400(caller, open_api, name):
    message = assert_invalid(caller.post(URL, data=BAD_BODIES[name], content_type=JSON))
    if name.startswith(("nested", "array")):
        assert "nested deeper than 100 levels" in message
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_the_nesting_limit_is_a_setting(caller, open_api):
    with override_settings(IOLINKER_MAX_JSON_DEPTH=5):
        assert caller.post(URL, data=nested(5), content_type=JSON).status_code == 202
        message = assert_invalid(caller.post(URL, data=nested(6), content_type=JSON))
        assert "nested deeper than 5 levels" in message
    assert Execution.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "stored"),
    [
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a UTF-8 byte-order mark is allowed
        (b'{"path": "C:\\\\u0000"}', {"path": "C:\\u0000"}),  # a backslash, not a NUL
        ('{"s": "\\ud83d\\ude00 \U0001f600"}'.encode(), {"s": "\U0001f600 \U0001f600"}),
        (b'{"k": "[[[[", "v": [' + b'"]]]]", ' * 200 + b"1]}", None),  # brackets in strings
    ],
    ids=["utf8-bom", "escaped-backslash", "surrogate-pairs", "brackets-in-strings"],
)
def test_bodies_that_only_look_suspicious_are_accepted_and_stored_as_sent(
    caller, open_api, body, stored
):
    response = caller.post(URL, data=body, content_type=JSON)
    assert response.status_code == 202, response.content
    expected = stored if stored is not None else json.loads(body)
    assert Execution.objects.get().input["body"] == expected


@pytest.mark.django_db
def test_a_nul_in_a_stored_header_is_400(caller, open_api, settings):
    settings.IOLINKER_TRIGGER_HEADERS = ["x-tenant"]
    response = caller.post(URL, data="{}", content_type=JSON, HTTP_X_TENANT="a\x00b")
    assert "Header x-tenant must not contain NUL" in assert_invalid(response)
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        nested(100),
        nested(101),
        "[" * 100 + "]" * 100,
        "[" * 101 + "]" * 101,
        '{"a": "' + "[" * 300 + '"}',
        '{"a": "\\"' + "{" * 300 + '"}',
        '{"a": "\\\\", "b": ' + "[" * 101 + "]" * 101 + "}",
        json.dumps([{"x": [i, "}{"], "y": {"z": []}} for i in range(200)]),
        json.dumps({"a": ["]]]]" * 50, [[{"b": "[[[["}]]]}),
    ],
)
def test_the_depth_check_agrees_with_the_parsed_value(text):
    def depth(value) -> int:
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        return 0

    for limit in (1, 3, 100):
        assert json_too_deep(text.encode(), limit) == (depth(json.loads(text)) > limit)


# A burst of good calls with bad ones mixed in, through the real group committer.


@pytest.mark.django_db(transaction=True)
def test_bad_bodies_in_a_concurrent_burst_are_refused_alone(open_api):
    calls = []
    for i in range(240):
        bad = list(BAD_BODIES.values())[i % len(BAD_BODIES)] if i % 4 == 3 else None
        calls.append((i, bad))

    def send(call):
        i, bad = call
        client = WsgiClient() if i % 2 else Client()  # both HTTP stacks
        body = bad if bad is not None else json.dumps({"n": i}).encode()
        response = client.post(URL, data=body, content_type=JSON)
        connection.close()
        return i, bad, response

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, calls))
    good = {}
    for i, bad, response in results:
        if bad is None:
            assert response.status_code == 202, response.content[:300]
            good[int(response.json()["response"]["uid"])] = i
        else:
            assert_invalid(response)
    stored = dict(Execution.objects.values_list("uid", "input"))
    assert set(stored) == set(good)
    assert all(stored[uid]["body"] == {"n": n} for uid, n in good.items())


def test_a_failed_batch_is_written_again_run_by_run_so_only_the_bad_run_fails():
    batches = []

    def commit(items):
        batches.append(list(items))
        time.sleep(0.01)  # lets the others gather into one batch
        if "bad" in items:
            raise DataError("unsupported Unicode escape sequence")

    intake = GroupCommit(commit, retry_alone=lambda exc: isinstance(exc, DataError))

    def submit(item):
        try:
            intake.submit(item)
        except DataError:
            return item, "refused"
        return item, "ok"

    items = [f"good{i}" for i in range(40)]
    items.insert(17, "bad")
    with ThreadPoolExecutor(16) as pool:
        outcomes = dict(pool.map(submit, items))
    assert outcomes.pop("bad") == "refused"
    assert set(outcomes.values()) == {"ok"}
    assert any(len(b) > 1 and "bad" in b for b in batches)  # it did share a batch


def test_a_database_outage_fails_the_batch_without_retrying_each_run():
    from django.db import OperationalError

    calls = []

    def commit(items):
        calls.append(list(items))
        time.sleep(0.01)
        raise OperationalError("connection refused")

    intake = GroupCommit(commit, retry_alone=run_intake.may_be_one_runs_fault)

    def submit(i):
        with pytest.raises(OperationalError):
            intake.submit(i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(submit, range(24)))
    assert sum(map(len, calls)) == 24  # each run written once: no run-by-run retry
    assert not run_intake.may_be_one_runs_fault(ApiError(errors.UNAVAILABLE))
    assert run_intake.may_be_one_runs_fault(DataError("bad value"))


@pytest.mark.django_db(transaction=True)
def test_a_value_the_checks_missed_fails_only_its_own_call_on_postgresql(open_api, monkeypatch):
    """The last line: were a value the database refuses to pass the checks, its
    batch is written again run by run and only its caller gets the 400."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL, whose jsonb refuses \\u0000 (SQLite stores it)")
    monkeypatch.setattr(run_intake, "stored_text", json.dumps)  # no intake check
    from triggers.services import api_fire

    def fire(i):
        payload = {"a": "\x00"} if i % 5 == 2 else {"n": i}
        try:
            uid = api_fire(api=open_api, payload=payload).uid
        except DataError:
            return i, None
        finally:
            connection.close()
        return i, uid

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(fire, range(100)))
    refused = [i for i, uid in results if uid is None]
    assert refused == [i for i in range(100) if i % 5 == 2]
    stored = dict(Execution.objects.values_list("uid", "input"))
    assert {uid: stored[uid]["body"] for i, uid in results if uid} == {
        uid: {"n": i} for i, uid in results if uid
    }


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bad_bodies_in_a_burst_to_a_real_server_are_refused_alone(open_api):
    """The same burst to granian serving the production WSGI application (the
    process's own committer thread and connection), from 12 keep-alive clients."""
    import httpx

    from tests.support.processes import Platform

    bad_bodies = list(BAD_BODIES.values())
    calls = [(i, bad_bodies[i % len(bad_bodies)] if i % 4 == 3 else None) for i in range(600)]
    platform = Platform(qcluster=False).start()
    try:
        url = platform.base_url + URL

        def send(chunk):
            answers = []
            with httpx.Client(timeout=30) as client:
                for i, bad in chunk:
                    body = bad if bad is not None else json.dumps({"n": i}).encode()
                    response = client.post(url, content=body, headers={"Content-Type": JSON})
                    answers.append((i, bad, response.status_code, response.json()))
            return answers

        with ThreadPoolExecutor(12) as pool:
            results = [
                a for part in pool.map(send, [calls[k::12] for k in range(12)]) for a in part
            ]
    finally:
        platform.stop()
    good = {}
    for i, bad, status, body in results:
        if bad is None:
            assert status == 202, body
            good[int(body["response"]["uid"])] = i
        else:
            assert status == 400, body
            assert body["response"]["error"]["code"] == "requestError.invalidParams"
    stored = dict(Execution.objects.values_list("uid", "input"))
    assert len(good) == 450 and set(stored) == set(good)
    assert all(stored[uid]["body"] == {"n": n} for uid, n in good.items())
