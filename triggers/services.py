import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.cache import caches

from iolinker import errors
from iolinker.errors import ApiError
from triggers.callbacks import callback_apis_forget
from triggers.models import ApiDefinition, AuthMode
from workflows.models import Execution
from workflows.services import execution_queue

TOKEN_BYTES = 32
# Never stored with a run, whatever IOLINKER_TRIGGER_HEADERS says.
SECRET_HEADERS = frozenset({"token", "password", "authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True)
class TriggerCall:
    """What a caller sent, whatever the transport (HTTP, an operator command)."""

    headers: Mapping[str, str]
    query: dict = field(default_factory=dict)
    # Read only once the caller is authenticated (a body can be 1 MiB).
    read_body: Callable[[], dict] = dict
    # None: the API's own verb (operator commands).
    http_method: str | None = None


def api_call(*, module: str, method: str, call: TriggerCall, authenticate: bool = True) -> int:
    """Accept a call of an API: check it, record its run and queue it; the run's uid.

    The one code path of HTTP triggers and `fire_api` (which skips caller
    authentication: the operator is trusted, the enabled switch still holds).
    """
    api = api_get(module=module, method=method)
    http_method = call.http_method or api.http_method
    api_check_callable(api=api, http_method=http_method)
    if authenticate:
        api_authenticate(api=api, headers=call.headers)
    trigger_input = trigger_input_build(
        http_method=http_method,
        body=call.read_body() if http_method == "POST" else {},
        query=call.query,
        headers=call.headers,
    )
    return execution_queue(workflow_id=api.workflow_id, api_id=api.pk, trigger_input=trigger_input)


MAX_UID = 2**63 - 1
_UID_TEXT = re.compile(r"[0-9]{1,19}")  # ASCII digits only (str.isdigit takes "²")


def run_read_key(uid: int | str) -> str:
    """The key that reads a run of an API without authentication (in its
    Location URL): uids are time-ordered and guessable, so a run must not be
    readable by anyone who can count."""
    message = f"iolinker-run:{uid}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def api_execution(
    *, module: str, method: str, uid: str, headers: Mapping[str, str], key: str = ""
) -> Execution:
    """A run of this API, for a caller with the API's credentials (for an API
    without authentication: with the run's read key, see run_read_key).

    A uid of another API's run is "not found": uids are time-ordered and
    guessable, so a run is readable only with its own API's credentials. A
    disabled API still answers: its callers were promised these uids.
    """
    api = api_get(module=module, method=method)
    api_authenticate(api=api, headers=headers)
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


class _ApiCache:
    """API definitions by (module, method), this process only.

    Saves and deletes in this process clear it at once (signals, see apps.py);
    changes made by other processes are seen within IOLINKER_API_CACHE_SECONDS.
    Misses are cached too, so unknown names cost no query per request.
    """

    entries: dict[tuple[str, str], tuple[float, ApiDefinition | None]] = {}
    max_entries = 10_000

    @classmethod
    def clear(cls) -> None:
        cls.entries = {}


def api_get(*, module: str, method: str) -> ApiDefinition:
    key, now = (module, method), time.monotonic()
    entry = _ApiCache.entries.get(key)
    if entry is not None and entry[0] > now:
        api = entry[1]
    else:
        api = (
            ApiDefinition.objects.select_related("workflow")
            .filter(module=module, method=method)
            .first()
        )
        ttl = settings.IOLINKER_API_CACHE_SECONDS
        if ttl:
            if len(_ApiCache.entries) >= _ApiCache.max_entries:
                _ApiCache.clear()
            _ApiCache.entries[key] = (now + ttl, api)
    if api is None:
        raise ApiError(errors.NOT_FOUND, f"API {module}/{method} not found")
    return api


def api_set_token(*, api: ApiDefinition) -> str:
    """Give the API a new random token; return it (the only time it is readable)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    api.token_hash = _token_digest(token)
    api.save(update_fields=["token_hash", "updated_at"])
    return token


def api_set_enabled(*, apis, enabled: bool) -> int:
    """Switch APIs on or off (a queryset); returns how many."""
    count = apis.update(enabled=enabled)
    _ApiCache.clear()
    return count


def api_cache_clear(**kwargs) -> None:
    _ApiCache.clear()
    callback_apis_forget()


def api_set_password(*, api: ApiDefinition, user: str, password: str) -> None:
    api.auth_user = user
    api.password_hash = make_password(password)
    api.save(update_fields=["auth_user", "password_hash", "updated_at"])


def api_check_callable(*, api: ApiDefinition, http_method: str) -> None:
    if http_method != api.http_method:
        raise ApiError(
            errors.METHOD_NOT_ALLOWED,
            f"{api} accepts {api.http_method}, not {http_method}",
            headers={"Allow": api.http_method},
        )
    if not api.enabled:
        raise ApiError(errors.API_DISABLED, f"API {api} is not enabled")
    if not api.workflow.enabled:
        raise ApiError(errors.API_DISABLED, f"API {api} is not enabled: its workflow is disabled")


def api_authenticate(*, api: ApiDefinition, headers: Mapping[str, str]) -> None:
    """Check the caller's credentials (headers `token`, or `user` + `password`)."""
    if api.auth_mode == AuthMode.TOKEN:
        token = _header(headers, "token")
        if not token:
            raise ApiError(errors.TOKEN_REQUIRED)
        if not api.token_hash or not hmac.compare_digest(_token_digest(token), api.token_hash):
            raise ApiError(errors.UNAUTHORIZED, "Invalid token")
    elif api.auth_mode == AuthMode.PASSWORD:
        user, password = _header(headers, "user"), _header(headers, "password")
        if not user or not password:
            raise ApiError(errors.CREDENTIALS_REQUIRED)
        if not _password_ok(api, user, password):
            raise ApiError(errors.UNAUTHORIZED, "Invalid user or password")


def trigger_input_build(
    *, http_method: str, body: dict, query: dict, headers: Mapping[str, str]
) -> dict:
    """The trigger input a workflow sees. Only allow-listed headers are kept and
    credentials never are."""
    kept = settings.IOLINKER_TRIGGER_HEADERS
    return {
        "method": http_method,
        "body": body,
        "query": query,
        "headers": {
            name: value
            for name, value in ((k.lower(), v) for k, v in headers.items())
            if name in kept and name not in SECRET_HEADERS
        },
    }


def _token_digest(token: str) -> str:
    # Tokens are 256 random bits: a fast hash is safe and keeps each call cheap.
    return hashlib.sha256(token.encode()).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header as text: WSGI hands over latin-1, credentials may be UTF-8."""
    value = headers.get(name, "")
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _password_ok(api: ApiDefinition, user: str, password: str) -> bool:
    """Verify user + password, remembering a success briefly.

    The slow password hash runs once per credential per cache period. The
    cache key is an HMAC over the stored user and hash and the presented
    credentials, so changing the password or the user makes old entries
    unreachable at once.
    """
    if not api.auth_user or not api.password_hash:
        return False
    message = "\0".join([str(api.pk), api.auth_user, api.password_hash, user, password])
    digest = hmac.new(settings.SECRET_KEY.encode(), message.encode(), hashlib.sha256).hexdigest()
    key = "pw:" + digest
    cache = caches["credentials"]
    if cache.get(key):
        return True
    user_ok = hmac.compare_digest(user.encode(), api.auth_user.encode())
    password_ok = check_password(password, api.password_hash)  # always run: no timing hint
    if user_ok and password_ok:
        cache.set(key, True)
        return True
    return False
