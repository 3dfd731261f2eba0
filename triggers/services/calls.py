"""Accepting a call of an API, the one code path of HTTP triggers (both stacks),
`fire_api` and the admin's Debug button: ``api_call`` checks the call (API,
method, caller, rate, idempotency key), builds the trigger input a workflow sees
and queues its run (workflows.services.execution_queue); ``api_execution`` reads
a run back for its API's caller. Domain errors of workflows become the caller's
error here, once (iolinker.errors.DOMAIN_ERRORS).
"""

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from django.conf import settings

from iolinker import errors
from iolinker.errors import ApiError
from triggers import throttle
from triggers.models import ApiDefinition, AuthMode
from triggers.services.apis import api_check_callable, api_get
from triggers.services.auth import api_authenticate
from triggers.services.idempotency import api_call_idempotent, idempotency_key_check
from triggers.stats import trigger_refusal_record
from workflows.errors import WorkflowsError
from workflows.models import Execution
from workflows.services import execution_queue

# Never stored with a run, whatever IOLINKER_TRIGGER_HEADERS says.
SECRET_HEADERS = frozenset(
    {
        "token",
        "password",
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
    }
)


@dataclass(frozen=True)
class TriggerCall:
    """What a caller sent, whatever the transport (HTTP, an operator command)."""

    headers: Mapping[str, str]
    query: dict = field(default_factory=dict)
    # Read only once the caller is authenticated (a body can be 1 MiB).
    read_body: Callable[[], dict] = dict
    # None: the API's own verb (operator commands).
    http_method: str | None = None
    # The caller's Idempotency-Key (None: no header, the common case).
    idempotency_key: str | None = None
    # The caller's address (triggers.throttle.client_ip); None: not a network
    # caller (operator commands), no allowlist or throttle applies.
    client_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted call: its run's uid, and whether an Idempotency-Key named an
    earlier run (``replayed``: nothing was started, the caller gets that run)."""

    uid: int
    replayed: bool = False


def api_call(*, module: str, method: str, call: TriggerCall, authenticate: bool = True) -> Accepted:
    """Accept a call of an API: check it, record its run and queue it.

    The one code path of HTTP triggers, `fire_api` and the admin's Debug button
    (both skip caller authentication: the operator is trusted, the enabled
    switch still holds). A call with an idempotency key goes through
    api_call_idempotent; one without pays nothing for the feature (no query, no
    lookup). A refused call (a 4xx answer) is counted (triggers/stats.py); an
    accepted one is not: its execution row is the count.
    """
    api = None
    try:
        api = api_get(module=module, method=method)
        return _api_call_checked(api=api, call=call, authenticate=authenticate)
    except WorkflowsError as exc:
        # The domain's error in the caller's words (iolinker.errors.DOMAIN_ERRORS).
        error = ApiError.from_domain(exc)
        _refusal_count(api, error)
        raise error from exc
    except ApiError as exc:
        _refusal_count(api, exc)
        raise


def _refusal_count(api: ApiDefinition | None, exc: ApiError) -> None:
    if exc.spec.status < 500:
        api_id = api.pk if api is not None else None
        trigger_refusal_record(api_id=api_id, code=exc.spec.code, status=exc.spec.status)


def api_fire(
    *,
    api: ApiDefinition,
    payload: dict | None = None,
    idempotency_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Accepted:
    """Call an API as an operator (`fire_api`, the admin's Debug button): through
    api_call without caller authentication, with ``payload`` (default: the API's
    debug payload) as the JSON body of a POST or the query of a GET."""
    data = (api.debug_payload or {}) if payload is None else payload
    headers = headers or {"user-agent": "iolinker operator"}
    if api.http_method == "GET":
        query = {k: v if isinstance(v, list) else str(v) for k, v in data.items()}
        call = TriggerCall(headers=headers, query=query, idempotency_key=idempotency_key)
    else:
        call = TriggerCall(headers=headers, read_body=lambda: data, idempotency_key=idempotency_key)
    return api_call(module=api.module, method=api.method, call=call, authenticate=False)


def _api_call_checked(*, api: ApiDefinition, call: TriggerCall, authenticate: bool) -> Accepted:
    http_method = call.http_method or api.http_method
    api_check_callable(api=api, http_method=http_method)
    if authenticate:
        api_authenticate(api=api, headers=call.headers, client_ip=call.client_ip)
        # After the credentials: callers without them cannot use up the API's quota
        # (their failures have their own throttle).
        throttle.api_check_rate(api=api)
    if call.idempotency_key is not None:
        # After authentication: a caller without credentials learns nothing about keys.
        idempotency_key_check(call.idempotency_key)
    trigger_input = trigger_input_build(
        http_method=http_method,
        body=call.read_body() if http_method == "POST" else {},
        query=call.query,
        headers=call.headers,
    )
    if call.idempotency_key is None:
        uid = execution_queue(
            workflow_id=api.workflow_id, api_id=api.pk, trigger_input=trigger_input
        )
        return Accepted(uid)
    uid, replayed = api_call_idempotent(
        api=api, key=call.idempotency_key, trigger_input=trigger_input
    )
    return Accepted(uid, replayed)


MAX_UID = 2**63 - 1
_UID_TEXT = re.compile(r"[0-9]{1,19}")  # ASCII digits only (str.isdigit takes "²")


def run_read_key(uid: int | str) -> str:
    """The key that reads a run of an API without authentication (in its
    Location URL): uids are time-ordered and guessable, so a run must not be
    readable by anyone who can count."""
    message = f"iolinker-run:{uid}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def api_execution(
    *,
    module: str,
    method: str,
    uid: str,
    headers: Mapping[str, str],
    key: str = "",
    client_ip: str | None = None,
) -> Execution:
    """A run of this API, for a caller with the API's credentials (for an API
    without authentication: with the run's read key, see run_read_key).

    A uid of another API's run is "not found": uids are time-ordered and
    guessable, so a run is readable only with its own API's credentials. A
    disabled API still answers: its callers were promised these uids.
    """
    api = api_get(module=module, method=method)
    api_authenticate(api=api, headers=headers, client_ip=client_ip)
    # Without authentication the read key stands in for credentials; a wrong one
    # is "not found", like an unknown uid.
    allowed = api.auth_mode != AuthMode.NONE or hmac.compare_digest(
        key.encode(), run_read_key(uid).encode()
    )
    execution = None
    if allowed and _UID_TEXT.fullmatch(uid) and int(uid) <= MAX_UID:
        execution = Execution.objects.filter(uid=int(uid), api_id=api.pk).first()
    if execution is None:
        raise ApiError(errors.NOT_FOUND, f"Execution {uid[:40]} not found for API {api}")
    return execution


def trigger_input_build(
    *, http_method: str, body: dict, query: dict, headers: Mapping[str, str]
) -> dict:
    """The trigger input a workflow sees. Only allow-listed headers are kept and
    credentials never are."""
    kept = settings.IOLINKER_TRIGGER_HEADERS
    stored = {
        name: value
        for name, value in ((k.lower(), v) for k, v in headers.items())
        if name in kept and name not in SECRET_HEADERS
    }
    for name, value in stored.items():
        # (WSGI headers are latin-1 text: a NUL is the only character no database takes.)
        if "\x00" in value:
            raise ApiError(errors.INVALID_PARAMS, f"Header {name} must not contain NUL")
    return {"method": http_method, "body": body, "query": query, "headers": stored}
