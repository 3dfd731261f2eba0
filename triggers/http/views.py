"""The caller API's views (Django REST framework): a trigger call (``/async``,
``/sync``), a run's status and its cancel, and the OpenAPI document.

Thin: the caller checks are the authentication and throttle classes of
``triggers.http.drf``; each handler calls one service (``transport`` for a
trigger) and returns one answer (``answers``). Production serves ``/async``
from the WSGI fast path (``iolinker/wsgi.py``), the accelerator of
``TriggerAsyncView``: both call ``transport.trigger_answer``.

A trigger view takes every verb to its one handler: which verb an API accepts
is the API's setting, so the caller checks answer the 405 (with the API's verb
in ``Allow``) after a 404 for an unknown API, as the fast path does.
"""

from django.conf import settings

from iolinker import errors, responses
from iolinker.errors import ApiError
from triggers.http import answers, parsing, transport
from triggers.http.drf import (
    ApiRateThrottle,
    CallerAPIView,
    RunCallerAuthentication,
    TriggerCallerAuthentication,
)
from triggers.http.service import NotCancellable, api_get, execution_cancel
from triggers.http.waiters import WAITERS
from triggers.models import AuthMode
from triggers.openapi import openapi_document, openapi_render


class TriggerView(CallerAPIView):
    """The common part of ``/async`` and ``/sync``: every verb, one handler."""

    authentication_classes = (TriggerCallerAuthentication,)
    throttle_classes = (ApiRateThrottle,)

    def handle(self, request, *args, **kwargs):
        raise NotImplementedError

    def http_method_not_allowed(self, request, *args, **kwargs):
        return self.handle(request, *args, **kwargs)

    options = http_method_not_allowed


class TriggerAsyncView(TriggerView):
    """Accept a call: 202 with the run's uid and Location."""

    def handle(self, request, module: str, method: str):
        answer = transport.trigger_answer(
            module=module,
            method=method,
            http_method=request.method,
            path=request.path,
            checked_call=request.auth.call,
        )
        return answers.response(answer)


class TriggerSyncView(TriggerView):
    """Trigger, then wait up to the API's sync timeout: the result (200, or the
    run's non-zero code and message), or 202 with the uid when it takes longer.

    A replayed Idempotency-Key answers as a new call would, for the run the key
    names: it waits for that run in the same way (its result, or 202 with the
    uid), with ``Idempotent-Replayed: true``; it starts nothing.
    """

    def check_request(self, request, module: str, method: str) -> None:
        api = api_get(module=module, method=method)
        if not api.sync_enabled:
            raise ApiError(errors.NOT_FOUND, f"API {api} does not answer /sync (only /async)")

    def handle(self, request, module: str, method: str):
        api = request.auth.api
        accepted = transport.checked_call_accept(
            module=module, method=method, call=request.auth.call
        )
        if accepted.replayed and api.auth_mode == AuthMode.NONE:
            # Knowing an open API's Idempotency-Key proves nothing: no result, no read key.
            return answers.response(answers.accepted(module, method, accepted))
        execution = WAITERS.wait_final(accepted.uid, api.sync_timeout, otherwise=None)
        if execution is None or not execution.is_final:  # (None: deleted meanwhile, or no slot)
            return answers.response(answers.accepted(module, method, accepted))
        return answers.response(answers.sync_result(execution, replayed=accepted.replayed))


class ExecutionStatusView(CallerAPIView):
    """A run's status and result (the 202's Location); ``?wait=N`` waits up to N
    seconds for it to finish."""

    authentication_classes = (RunCallerAuthentication,)

    def check_request(self, request, **kwargs) -> None:
        if request.method != "GET":  # HEAD too, as ever
            raise ApiError(
                errors.METHOD_NOT_ALLOWED, "Read a run's status with GET", headers={"Allow": "GET"}
            )
        self.wait = parsing.wait_seconds(parsing.single_param(request._request.GET, "wait"))

    def get(self, request, module: str, method: str, uid: str):
        execution = request.auth
        if self.wait and not execution.is_final:
            execution = WAITERS.wait_final(execution.uid, self.wait, otherwise=execution)
            if execution is None:
                raise ApiError(errors.NOT_FOUND, f"Execution {uid} not found (deleted)")
        return answers.response(answers.run_status(execution))


class ExecutionCancelView(CallerAPIView):
    """Cancel a run (same credentials as the API): 200 with its status once it is
    cancelled (it was queued or waiting, or already cancelled); 202 with its status
    and Location while its worker stops it (it was running); 409 if it already
    ended otherwise."""

    authentication_classes = (RunCallerAuthentication,)

    def check_request(self, request, **kwargs) -> None:
        if request.method != "POST":
            raise ApiError(
                errors.METHOD_NOT_ALLOWED, "Cancel a run with POST", headers={"Allow": "POST"}
            )

    def post(self, request, module: str, method: str, uid: str):
        try:
            execution = execution_cancel(uid=request.auth.uid)
        except NotCancellable as exc:
            raise ApiError(errors.EXECUTION_FINISHED, str(exc)) from None
        if execution is None:
            raise ApiError(errors.NOT_FOUND, f"Execution {uid} not found (deleted)")
        if execution.is_final:
            return answers.response(answers.run_status(execution))
        headers = [("Location", answers.location(module, method, str(execution.uid)))]
        return answers.response(answers.run_status(execution, status=202, headers=headers))


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
