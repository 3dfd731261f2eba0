import functools
import threading

from django.conf import settings
from django.http import QueryDict
from django.urls import get_script_prefix, reverse

from iolinker import errors, responses
from iolinker.errors import ApiError
from triggers.body import json_body
from triggers.models import AuthMode
from triggers.openapi import openapi_document, openapi_render
from triggers.services import (
    IDEMPOTENCY_HEADER,
    Accepted,
    TriggerCall,
    api_call,
    api_execution,
    api_get,
    run_read_key,
)
from triggers.throttle import client_ip
from workflows.lifecycle import NotCancellable
from workflows.lifecycle import execution_cancel as execution_cancel_service
from workflows.selectors import execution_status as execution_status_payload
from workflows.selectors import execution_wait_final


@responses.api_endpoint
def trigger_async(request, module: str, method: str):
    # Production serves this URL from iolinker/wsgi.py without Django's request
    # machinery; both go through trigger_accept, so they answer alike.
    accepted = _accept(request, module, method)
    headers = dict(accepted_headers(module, method, accepted))
    return responses.ok({"uid": str(accepted.uid)}, status=202, headers=headers)


@responses.api_endpoint
def trigger_sync(request, module: str, method: str):
    """Trigger, then wait up to the API's sync timeout: the result (200, or the
    run's non-zero code and message), or 202 with the uid when it takes longer.

    A replayed Idempotency-Key answers as a new call would, for the run the key
    names: it waits for that run in the same way (its result, or 202 with the
    uid), with ``Idempotent-Replayed: true``; it starts nothing.
    """
    api = api_get(module=module, method=method)
    if not api.sync_enabled:
        raise ApiError(errors.NOT_FOUND, f"API {api} does not answer /sync (only /async)")
    accepted = _accept(request, module, method)
    if accepted.replayed and api.auth_mode == AuthMode.NONE:
        # Knowing an open API's Idempotency-Key proves nothing: no result, no read key.
        headers = dict(accepted_headers(module, method, accepted))
        return responses.ok({"uid": str(accepted.uid)}, status=202, headers=headers)
    execution = _WAITERS.wait_final(accepted.uid, api.sync_timeout, otherwise=None)
    if execution is None or not execution.is_final:  # (None: deleted meanwhile, or no slot)
        headers = dict(accepted_headers(module, method, accepted))
        return responses.ok({"uid": str(accepted.uid)}, status=202, headers=headers)
    status = execution_status_payload(execution)
    return responses.ok(
        {key: status[key] for key in ("data", "code", "msg", "uid")},
        headers=dict([REPLAYED_HEADER]) if accepted.replayed else None,
    )


def _accept(request, module: str, method: str) -> Accepted:
    return trigger_accept(
        module=module,
        method=method,
        http_method=request.method,
        headers=request.headers,
        query=request.GET,
        read_body=lambda: _request_body(request),
        remote_addr=request.META.get("REMOTE_ADDR", ""),
    )


def trigger_accept(
    *,
    module: str,
    method: str,
    http_method: str,
    headers,
    query: QueryDict,
    read_body,
    remote_addr: str,
) -> Accepted:
    """Accept one HTTP call of an API (``headers``: any mapping with lower-case
    keys or case-insensitive lookup; ``remote_addr``: the TCP peer)."""
    _check_header_size(headers)
    call = TriggerCall(
        http_method=http_method,
        headers=headers,
        query=query_dict(query),
        read_body=lambda: json_body(read_body()),
        idempotency_key=headers.get(IDEMPOTENCY_HEADER),
        client_ip=client_ip(remote_addr=remote_addr, forwarded_for=headers.get("x-forwarded-for")),
    )
    return api_call(module=module, method=method, call=call)


# On the answer to a call whose Idempotency-Key named an earlier run.
REPLAYED_HEADER = ("Idempotent-Replayed", "true")


def accepted_headers(module: str, method: str, accepted: Accepted) -> list[tuple[str, str]]:
    """The headers of a 202: Location, and Idempotent-Replayed on a replay. A
    replay's Location has no read key: on an API without authentication, whoever
    knows (or guesses) an Idempotency-Key would otherwise read that run (the
    first answer's Location has it; README, "Idempotency keys")."""
    url = location(module, method, str(accepted.uid), read_key=not accepted.replayed)
    headers = [("Location", url)]
    if accepted.replayed:
        headers.append(REPLAYED_HEADER)
    return headers


def location(module: str, method: str, uid: str, *, read_key: bool = True) -> str:
    """The status URL of a run (the 202's Location header); for an API without
    authentication it carries the run's read key (unless ``read_key`` is false)."""
    url = _status_url_prefix(get_script_prefix(), module, method) + uid
    if read_key and api_get(module=module, method=method).auth_mode == AuthMode.NONE:
        url += "?key=" + run_read_key(uid)
    return url


@functools.lru_cache(maxsize=1024)
def _status_url_prefix(script_prefix: str, module: str, method: str) -> str:
    # reverse() costs ~15 µs a call; the URL differs per API only.
    url = reverse("execution-status", kwargs={"module": module, "method": method, "uid": "0"})
    return url.removesuffix("0")


def _requested_execution(request, module: str, method: str, uid: str):
    """The run a status or cancel request names, with the API's credentials (and
    the read key of an API without authentication)."""
    return api_execution(
        module=module,
        method=method,
        uid=uid,
        headers=request.headers,
        key=_single_param(request.GET, "key") or "",
        client_ip=_client_ip(request),
    )


@responses.api_endpoint
def execution_cancel(request, module: str, method: str, uid: str):
    """Cancel a run (same credentials as the API): 200 with its status once it is
    cancelled (it was queued or waiting, or already cancelled); 202 with its status
    and Location while its worker stops it (it was running); 409 if it already
    ended otherwise."""
    if request.method != "POST":
        raise ApiError(
            errors.METHOD_NOT_ALLOWED, "Cancel a run with POST", headers={"Allow": "POST"}
        )
    execution = _requested_execution(request, module, method, uid)
    try:
        execution = execution_cancel_service(uid=execution.uid)
    except NotCancellable as exc:
        raise ApiError(errors.EXECUTION_FINISHED, str(exc)) from None
    if execution is None:
        raise ApiError(errors.NOT_FOUND, f"Execution {uid} not found (deleted)")
    if execution.is_final:
        return responses.ok(execution_status_payload(execution))
    return responses.ok(
        execution_status_payload(execution),
        status=202,
        headers={"Location": location(module, method, str(execution.uid))},
    )


@responses.api_endpoint
def openapi_json(request):
    """The OpenAPI document of the enabled APIs; public unless
    IOLINKER_OPENAPI_PUBLIC is off (then 404, like any unknown URL)."""
    if not settings.IOLINKER_OPENAPI_PUBLIC:
        raise ApiError(errors.NOT_FOUND, "Not found")
    if request.method not in ("GET", "HEAD"):
        raise ApiError(
            errors.METHOD_NOT_ALLOWED,
            "Read the OpenAPI document with GET",
            headers={"Allow": "GET, HEAD"},
        )
    base_url = settings.IOLINKER_BASE_URL or request.build_absolute_uri("/")
    return responses.document(openapi_render(openapi_document(base_url=base_url)))


@responses.api_endpoint
def execution_status(request, module: str, method: str, uid: str):
    """A run's status and result (the 202's Location); ``?wait=N`` waits up to N
    seconds for it to finish."""
    if request.method != "GET":
        raise ApiError(
            errors.METHOD_NOT_ALLOWED, "Read a run's status with GET", headers={"Allow": "GET"}
        )
    wait = _wait_seconds(_single_param(request.GET, "wait"))
    execution = _requested_execution(request, module, method, uid)
    if wait and not execution.is_final:
        execution = _WAITERS.wait_final(execution.uid, wait, otherwise=execution)
        if execution is None:
            raise ApiError(errors.NOT_FOUND, f"Execution {uid} not found (deleted)")
    return responses.ok(execution_status_payload(execution))


class _Waiters:
    """Status requests of this process waiting at once, at most
    IOLINKER_STATUS_MAX_WAITERS: each holds a request thread, and triggers
    must keep some."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0

    def wait_final(self, uid: int, timeout: float, *, otherwise):
        """The run once final or after ``timeout`` (None if deleted meanwhile);
        ``otherwise`` at once when as many requests wait already."""
        with self.lock:
            if self.count >= settings.IOLINKER_STATUS_MAX_WAITERS:
                return otherwise
            self.count += 1
        try:
            return execution_wait_final(uid=uid, timeout=timeout)
        finally:
            with self.lock:
                self.count -= 1


_WAITERS = _Waiters()


def _client_ip(request) -> str:
    return client_ip(
        remote_addr=request.META.get("REMOTE_ADDR", ""),
        forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
    )


def _single_param(query: QueryDict, name: str) -> str | None:
    """A query parameter that is one value (the status URL's `wait` and `key`): a
    repeated one is refused, not read as its last value (the document says one)."""
    values = query.getlist(name)
    if len(values) > 1:
        raise ApiError(errors.INVALID_PARAMS, f"{name} must be given at most once")
    return values[0] if values else None


def _wait_seconds(text: str | None) -> float:
    if text is None or text == "":
        return 0.0
    limit = settings.IOLINKER_STATUS_MAX_WAIT
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= limit:  # also NaN
        raise ApiError(errors.INVALID_PARAMS, f"wait must be a number of seconds from 0 to {limit}")
    return wait


def _check_header_size(headers) -> None:
    """Headers kept in a run's input are stored: bound them as the body is."""
    limit = settings.IOLINKER_MAX_HEADER_BYTES
    if sum(len(name) + len(value) for name, value in headers.items()) > limit:
        raise ApiError(errors.HEADERS_TOO_LARGE, f"Request headers are larger than {limit} bytes")


def query_dict(params: QueryDict) -> dict:
    query = {}
    size, limit = 0, settings.IOLINKER_MAX_QUERY_BYTES
    for key, values in params.lists():
        if "\x00" in key or any("\x00" in v for v in values):
            raise ApiError(errors.INVALID_PARAMS, "Query parameters must not contain NUL")
        size += len(key) + sum(map(len, values))
        query[key] = values[0] if len(values) == 1 else values
    if size > limit:
        raise ApiError(errors.QUERY_TOO_LARGE, f"Query string is larger than {limit} bytes")
    return query


def body_reader(environ):
    """How to read a request's body from its WSGI environ.

    Without a Content-Length, read on only where the server marks the end of a
    chunked body (PEP 3333's wsgi.input_terminated; granian does); elsewhere the
    body is empty, as Django's own request stream has it.
    """
    if environ.get("CONTENT_LENGTH") or environ.get("wsgi.input_terminated"):
        return environ["wsgi.input"].read
    return lambda size: b""


def _request_body(request) -> bytes:
    length = request.META.get("CONTENT_LENGTH")
    # Django's stream stops at Content-Length (and reads nothing without one).
    read = request.read if length else body_reader(request.environ)
    return body_read(length, read)


def body_read(content_length: str | None, read) -> bytes:
    """The request body, refused early when larger than the limit.

    Without a Content-Length (a chunked request) it is read up to the limit.
    """
    limit = settings.IOLINKER_MAX_BODY_BYTES
    declared = None
    if content_length:
        if not content_length.isdigit():
            raise ApiError(errors.BAD_REQUEST, "Invalid Content-Length header")
        declared = int(content_length)
        if declared > limit:
            raise ApiError(errors.PAYLOAD_TOO_LARGE, f"Request body is larger than {limit} bytes")
    raw = read(limit + 1 if declared is None else declared)
    if len(raw) > limit:
        raise ApiError(errors.PAYLOAD_TOO_LARGE, f"Request body is larger than {limit} bytes")
    if declared is not None and len(raw) < declared:
        # The client stopped sending early: what arrived may parse, but it is not
        # what was sent.
        raise ApiError(errors.BAD_REQUEST, "Request body is shorter than its Content-Length")
    return raw
