"""The one transport function of a trigger call, which both HTTP stacks call.

``trigger_answer`` takes what any HTTP stack can hand over (verb, headers, query,
a body reader, the peer address) and returns the answer as (status, headers,
body bytes): the WSGI fast path (``iolinker/wsgi.py``) sends it as is, the DRF
view (``triggers.http.views.TriggerAsyncView``) wraps it in a response. So both
give the same answers and errors, byte for byte. ``checked_call_accept`` is the
accepting part alone (the ``/sync`` view waits on what it returns).

The order of the checks is the contract: the query's parse, the header size,
the query's bounds, the API (404), its verb and switch (405, 403), the caller
(IP allowlist, credentials, the wrong-credential throttle before any password
hash), the rate limit, then the idempotency key and the body. On the fast path
the service runs them all in one call; the DRF views run the caller checks in
their authentication and throttle classes first (``triggers.http.drf``, through
``trigger_call_read``, ``caller_check`` and ``caller_check_rate`` here), then
hand over the checked call (``checked_call``), and the service does the rest.
"""

from django.http import QueryDict

from iolinker.errors import ApiError
from triggers.http import answers
from triggers.http.parsing import check_header_size, query_dict
from triggers.http.service import (
    IDEMPOTENCY_HEADER,
    Accepted,
    TriggerCall,
    api_authenticate,
    api_call,
    api_check_callable,
    api_check_rate,
    api_get,
    client_ip,
    trigger_refusal_record,
)


def trigger_answer(
    *,
    module: str,
    method: str,
    http_method: str,
    path: str,
    headers=None,
    query_string: bytes = b"",
    read_json=None,
    remote_addr: str = "",
    checked_call: TriggerCall | None = None,
) -> answers.Answer:
    """Accept one HTTP call of an API: its 202, or its error (any exception).
    What the caller sent is read by ``trigger_call_read`` (its arguments), unless
    ``checked_call`` is the call the DRF view's caller checks already passed
    (then as ``checked_call_accept``); ``path``: for the log of an unexpected error."""
    try:
        call = checked_call or trigger_call_read(
            http_method=http_method,
            headers=headers,
            query_string=query_string,
            read_json=read_json,
            remote_addr=remote_addr,
        )
        accepted = api_call(module=module, method=method, call=call, authenticate=not checked_call)
    except Exception as exc:
        return answers.error(exc, method=http_method, path=path)
    return answers.accepted(module, method, accepted)


def checked_call_accept(*, module: str, method: str, call: TriggerCall) -> Accepted:
    """Accept a call whose caller checks already passed (``caller_check`` and
    ``caller_check_rate``: the DRF views' authentication and throttle): the
    service checks the rest, records the run and queues it."""
    return api_call(module=module, method=method, call=call, authenticate=False)


def trigger_call_read(
    *, http_method: str, headers, query_string: bytes, read_json, remote_addr: str
) -> TriggerCall:
    """What the caller sent, checked before the API is looked up: the query
    (parsed first, as Django parses ``request.GET``: too many fields is 400),
    the headers' size, the query's bounds. ``headers``: any mapping with
    lower-case keys or case-insensitive lookup; ``query_string``: the raw query
    (bytes, as ``get_bytes_from_wsgi`` gives it); ``read_json``: reads and
    checks the JSON body, called only once the caller is authenticated;
    ``remote_addr``: the TCP peer."""
    query = QueryDict(query_string)
    check_header_size(headers)
    return TriggerCall(
        http_method=http_method,
        headers=headers,
        query=query_dict(query),
        read_body=read_json,
        idempotency_key=headers.get(IDEMPOTENCY_HEADER),
        client_ip=client_ip(remote_addr=remote_addr, forwarded_for=headers.get("x-forwarded-for")),
    )


def caller_ip(remote_addr: str, forwarded_for: str | None) -> str:
    """The caller's address (REMOTE_ADDR, or behind trusted proxies X-Forwarded-For)."""
    return client_ip(remote_addr=remote_addr, forwarded_for=forwarded_for)


def caller_check(*, module: str, method: str, http_method: str, headers, client_ip: str):
    """The checks of a trigger call between what it sent and its rate limit, in
    the service's order, each refusal counted as the service counts it: the API
    (404), its verb and switch (405, 403), the caller (allowlist, credentials,
    wrong-credential throttle). Returns the API."""
    api = None
    try:
        api = api_get(module=module, method=method)
        api_check_callable(api=api, http_method=http_method)
        api_authenticate(api=api, headers=headers, client_ip=client_ip)
    except ApiError as exc:
        _refusal_record(api, exc)
        raise
    return api


def caller_check_rate(*, api) -> None:
    """Count one call against the API's rate limit (429 with Retry-After past it)."""
    try:
        api_check_rate(api=api)
    except ApiError as exc:
        _refusal_record(api, exc)
        raise


def _refusal_record(api, exc: ApiError) -> None:
    if exc.spec.status < 500:  # as triggers.services.api_call counts refusals
        api_id = api.pk if api is not None else None
        trigger_refusal_record(api_id=api_id, code=exc.spec.code, status=exc.spec.status)
