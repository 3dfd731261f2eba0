"""Every answer of the caller API as (status, headers, body bytes), built here
once for both HTTP stacks: a trigger's 202 (its uid, Location and
Idempotent-Replayed headers), a run's status, and an error from any exception
(through ``iolinker.responses``, which owns the ``{"response": ...}`` envelope
and the exception-to-error-table mapping). ``response`` turns an answer into a
Django ``HttpResponse`` for the views; the WSGI fast path sends it as is.
"""

import functools

from django.http import HttpResponse
from django.urls import get_script_prefix, reverse

from iolinker import responses
from triggers.http.service import Accepted, api_get, execution_status, run_read_key
from triggers.models import AuthMode

# (status, headers, body): what a transport sends.
Answer = tuple[int, list[tuple[str, str]], bytes]

# On the answer to a call whose Idempotency-Key named an earlier run.
REPLAYED_HEADER = ("Idempotent-Replayed", "true")


def accepted(module: str, method: str, accepted: Accepted) -> Answer:
    """The 202 of an accepted call: its uid, Location (and Idempotent-Replayed)."""
    body = responses.ok_body({"uid": str(accepted.uid)})
    return 202, accepted_headers(module, method, accepted), body


def error(exc: Exception, *, method: str, path: str) -> Answer:
    """The error answer of any exception raised while serving a call."""
    spec, message, extra = responses.error_parts(exc, method=method, path=path)
    return spec.status, list(extra.items()), responses.error_body(spec, message)


def run_status(execution, *, status: int = 200, headers=()) -> Answer:
    """A run's status document (the status URL, a cancel, a finished /sync)."""
    return status, list(headers), responses.ok_body(execution_status(execution))


def sync_result(execution, *, replayed: bool) -> Answer:
    """The 200 of a /sync call whose run ended in time: its result."""
    status = execution_status(execution)
    payload = {key: status[key] for key in ("data", "code", "msg", "uid")}
    return 200, [REPLAYED_HEADER] if replayed else [], responses.ok_body(payload)


def response(answer: Answer) -> HttpResponse:
    """An answer as a Django response (the Django/DRF views)."""
    status, headers, body = answer
    return HttpResponse(
        body, status=status, content_type="application/json", headers=dict(headers) or None
    )


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
