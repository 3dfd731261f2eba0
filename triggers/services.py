import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.cache import caches
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from iolinker import errors
from iolinker.errors import ApiError
from triggers import throttle
from triggers.callbacks import api_rotate_callback_secret, callback_apis_forget
from triggers.models import ApiDefinition, AuthMode, IdempotencyKey
from triggers.stats import trigger_refusal_record
from workflows.errors import WorkflowsError
from workflows.models import Execution
from workflows.services import execution_queue, queueing, sql
from workflows.services.intake import execution_uid_new, run_new

TOKEN_BYTES = 32
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
    api_call_once; one without pays nothing for the feature (no query, no
    lookup). A refused call (a 4xx answer) is counted (triggers/stats.py); an
    accepted one is not: its execution row is the count.
    """
    api = None
    try:
        api = api_get(module=module, method=method)
        return _api_accept(api=api, call=call, authenticate=authenticate)
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


def _api_accept(*, api: ApiDefinition, call: TriggerCall, authenticate: bool) -> Accepted:
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
    return api_call_once(api=api, key=call.idempotency_key, trigger_input=trigger_input)


# Idempotency keys -------------------------------------------------------------
#
# A caller that may retry (a timeout, a lost answer) sends the same
# Idempotency-Key with the same request; within IOLINKER_IDEMPOTENCY_SECONDS
# the retry gets the first call's uid and starts nothing. Keys are explicit
# only: two identical bodies without a key are two runs, as callers expect.

IDEMPOTENCY_HEADER = "idempotency-key"
# Printable ASCII (space included), as the header arrives (servers strip the
# spaces around a header value). Non-ASCII bytes reach WSGI as latin-1 text
# above \x7e, so they are refused too.
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# A key row that vanishes between our INSERT … ON CONFLICT DO NOTHING and our
# read (purged or released by another process at that moment) is inserted again.
_RESERVE_ATTEMPTS = 3
# The purge deletes this many keys per statement (short transactions), and stops
# after this long (the next scheduled purge goes on).
PURGE_BATCH = 2000
PURGE_TIME_BUDGET_S = 20.0


def idempotency_key_check(key: str) -> None:
    """A key is 1 to 255 printable ASCII characters; anything else is 400
    (requestError.invalidParams), like any other malformed parameter."""
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(errors.IDEMPOTENCY_KEY_INVALID)


def request_fingerprint(*, http_method: str, body: dict, query: dict) -> str:
    """What the caller asked for: SHA-256 of the verb, body and query as canonical
    JSON (sorted keys, no spaces), so the same request serialised differently
    matches. Headers are left out on purpose: a retry may well carry another
    User-Agent, X-Request-Id or a rotated token, and is still the same request."""
    canonical = json.dumps([http_method, body, query], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def api_call_once(*, api: ApiDefinition, key: str, trigger_input: dict) -> Accepted:
    """Accept a call carrying an idempotency key.

    * the key is new for this API (or expired): a new run, recorded with the key
      in one transaction (queueing.write_then_push);
    * the key names a run of the same request within the window: that run's uid,
      nothing started (``replayed``);
    * the key names a different request: 422 requestError.idempotencyKeyReused,
      nothing stored.

    Two concurrent calls with one key: the second blocks on the key's unique
    index until the first commits, then reads its row (one run, one uid for both).
    Keys are per API: the same key on another API is another key.
    """
    fingerprint = request_fingerprint(
        http_method=trigger_input["method"],
        body=trigger_input["body"],
        query=trigger_input["query"],
    )

    # The run and its key commit together or not at all, and a concurrent duplicate
    # blocks on the key's unique index until this transaction ends, then sees its
    # outcome. Not group-committed (workflows/intake.py): a batch is one
    # transaction for many callers, and one caller's conflict or refusal must not
    # fail the others, nor may a key wait on another batch's lock while holding the
    # committer. So the request thread writes its own run: a transaction and two
    # or three more statements, paid only by calls that carry a key.
    uid = execution_uid_new()  # outside the transaction: its lease commits on its own
    queueing.process()  # before the transaction: it may give back a pooled connection
    run = run_new(uid, api.workflow_id, api.pk, trigger_input)
    earlier: list[int] = []

    def write() -> list[int]:
        replayed = idempotency_key_reserve(api=api, key=key, fingerprint=fingerprint, uid=uid)
        if replayed is not None:
            earlier.append(replayed)
            return []
        sql.executions_insert([run])
        return [uid]

    def undo(uids) -> None:
        # The run and its key together, so a retry with the key starts afresh
        # instead of replaying a uid that no longer exists; only the key row naming
        # this uid: never a key another request holds by now.
        with transaction.atomic():
            IdempotencyKey.objects.filter(api=api, key=key, uid=uid).delete()
            Execution.objects.filter(uid=uid).delete()

    # ORM broker: key, run and message in one transaction. Redis: key and run
    # commit, then the push; a process dying in between leaves a queued run the
    # reaper pushes again, and meanwhile the key replays its uid (that run will
    # happen).
    queueing.write_then_push(write=write, undo=undo, atomic_write=True)
    if earlier:
        return Accepted(earlier[0], True)
    return Accepted(uid, False)


def idempotency_key_reserve(
    *, api: ApiDefinition, key: str, fingerprint: str, uid: int
) -> int | None:
    """Within the transaction that writes run ``uid``: record the key for it and
    return None, or return the uid of the run the key already names.

    The row is inserted first (INSERT … ON CONFLICT DO NOTHING; INSERT OR IGNORE
    on SQLite) rather than looked up first: a lookup finds nothing for two
    concurrent requests alike, while the insert makes the second wait on the
    unique index for the first one's transaction. The row is then read locked:
    if it names our uid we wrote it; otherwise it is someone's earlier call. An
    expired row is taken over in place (new uid, fingerprint and window); the
    lock makes concurrent takers queue, and the next one sees the fresh row.
    """
    now = timezone.now()
    for _ in range(_RESERVE_ATTEMPTS):
        IdempotencyKey.objects.bulk_create(
            [IdempotencyKey(api=api, key=key, fingerprint=fingerprint, uid=uid, created_at=now)],
            ignore_conflicts=True,
        )
        row = IdempotencyKey.objects.select_for_update().filter(api=api, key=key).first()
        if row is not None:
            break
    else:
        raise ApiError(errors.UNAVAILABLE, "Could not record the Idempotency-Key, try again")
    if row.uid == uid:
        return None  # ours: uids are never issued twice
    if row.created_at < idempotency_key_cutoff(now):
        row.fingerprint, row.uid, row.created_at = fingerprint, uid, now
        row.save(update_fields=["fingerprint", "uid", "created_at"])
        return None
    if row.fingerprint != fingerprint:
        raise ApiError(errors.IDEMPOTENCY_KEY_REUSED)
    return row.uid


def idempotency_key_cutoff(now: datetime | None = None) -> datetime:
    """Keys created before this are expired: they replay nothing and are purged."""
    window = timedelta(seconds=settings.IOLINKER_IDEMPOTENCY_SECONDS)
    return (now or timezone.now()) - window


def idempotency_keys_expired() -> QuerySet[IdempotencyKey]:
    return IdempotencyKey.objects.filter(created_at__lt=idempotency_key_cutoff())


def idempotency_key_purge(
    *, batch_size: int = PURGE_BATCH, time_budget: float = PURGE_TIME_BUDGET_S
) -> int:
    """Delete expired keys, ``batch_size`` per statement (each a short
    transaction, served by the created_at index), until none are left or
    ``time_budget`` seconds have passed; returns how many were deleted.
    Scheduled every minute (migration triggers 0004)."""
    deadline = time.monotonic() + time_budget
    deleted = 0
    while True:
        expired = idempotency_keys_expired()
        pks = list(expired.values_list("pk", flat=True)[:batch_size])
        if not pks:
            break
        # created_at is checked again: a key taken over meanwhile has a new window.
        deleted += expired.filter(pk__in=pks).delete()[0]
        if len(pks) < batch_size or time.monotonic() > deadline:
            break
    return deleted


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


def api_secrets_issue(*, api: ApiDefinition, password: str | None = None) -> dict[str, str]:
    """After an API is saved (the admin's form, the management API): store a new
    password when one is given for user + password authentication, give a token
    API without a token its first one, and an API with a callback URL but no
    signing secret its secret. Returns the new secrets by name (``token``,
    ``callbackSecret``): the only time they are readable."""
    issued = {}
    if api.auth_mode == AuthMode.PASSWORD and password:
        api_set_password(api=api, user=api.auth_user, password=password)
    if api.auth_mode == AuthMode.TOKEN and not api.token_hash:
        issued["token"] = api_set_token(api=api)
    if api.callback_url and not api.callback_secret:
        issued["callbackSecret"] = api_rotate_callback_secret(api=api)
    return issued


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


def api_authenticate(
    *, api: ApiDefinition, headers: Mapping[str, str], client_ip: str | None = None
) -> None:
    """Check where the caller is (the API's IP allowlist) and its credentials
    (headers `token`, or `user` + `password`).

    With ``client_ip`` wrong credentials are throttled per (API, address): past
    the limit that address gets 429 before anything is checked (triggers.throttle).
    """
    if client_ip is not None:
        throttle.api_check_ip(api=api, client_ip=client_ip)
    if api.auth_mode == AuthMode.NONE:
        return
    if client_ip is not None:
        throttle.auth_refuse_if_blocked(api=api, client_ip=client_ip)
    if api.auth_mode == AuthMode.TOKEN:
        token = _header(headers, "token")
        if not token:
            raise ApiError(errors.TOKEN_REQUIRED)
        if not api.token_hash or not hmac.compare_digest(_token_digest(token), api.token_hash):
            _auth_failed(api, client_ip)
            raise ApiError(errors.UNAUTHORIZED, "Invalid token")
    elif api.auth_mode == AuthMode.PASSWORD:
        user, password = _header(headers, "user"), _header(headers, "password")
        if not user or not password:
            raise ApiError(errors.CREDENTIALS_REQUIRED)
        if not _password_ok(api, user, password, client_ip=client_ip):
            _auth_failed(api, client_ip)
            raise ApiError(errors.UNAUTHORIZED, "Invalid user or password")


def _auth_failed(api: ApiDefinition, client_ip: str | None) -> None:
    if client_ip is not None:
        throttle.auth_failed(api=api, client_ip=client_ip)  # 429 once past the limit


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


def _password_ok(
    api: ApiDefinition, user: str, password: str, *, client_ip: str | None = None
) -> bool:
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
    if client_ip is not None:
        # The slow hash below is ~0.25 s of CPU: never for an address already
        # past its failures (a guesser, or a CPU exhaustion attempt).
        throttle.auth_refuse_if_throttled(api=api, client_ip=client_ip)
    user_ok = hmac.compare_digest(user.encode(), api.auth_user.encode())
    password_ok = check_password(password, api.password_hash)  # always run: no timing hint
    if user_ok and password_ok:
        cache.set(key, True)
        return True
    return False
