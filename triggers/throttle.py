"""Who may call an API from where, and how often (README, "Limits").

* the caller's address: REMOTE_ADDR, or behind trusted proxies the right-most
  untrusted X-Forwarded-For entry (``client_ip``);
* an API's IP allowlist: 403 ``requestError.ipNotAllowed`` (``api_check_ip``);
* an API's rate limit, all callers together: 429 ``requestError.tooManyRequests``
  with Retry-After (``api_check_rate``);
* the throttle on wrong credentials, per (API, address): after
  IOLINKER_AUTH_FAILURE_LIMIT failures within IOLINKER_AUTH_FAILURE_WINDOW
  seconds, that address's calls of that API answer 429 until the window passes,
  before any credential is checked (so no slow password hash runs for them);
* the API's failure budget, all addresses together: past
  IOLINKER_AUTH_FAILURE_API_LIMIT failures within the window, no password hash
  runs for that API (a credential verified recently still passes, a right token
  always does; see ``auth_refuse_if_throttled``);
* the admin login's throttle, per address and per username, before the password
  hash (``login_refuse_if_throttled``, ``login_failed``).

IPv6 callers are counted per /64 (one host usually holds a whole /64).

Counters live in the ``limits`` library's storage: Redis when REDIS_URL is set
(shared by every web process), else this process's memory (each web process then
counts on its own: N processes allow up to N times the limits).

The right caller pays nothing for any of this on an API without an allowlist
or a rate limit: one look-up in this process's (usually empty) dict of blocked
addresses, no storage round trip. A process learns that an address is blocked
when that address fails here (or, for a password, before its slow hash runs);
until then another process's block does not stop a right credential from it.
"""

import hashlib
import ipaddress
import math
import time
from functools import lru_cache

from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits import RateLimitItemPerSecond as PerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from iolinker import errors
from iolinker.errors import ApiError
from triggers.models import ApiDefinition, RatePeriod
from workflows.process import PerProcess

_PERIODS = {
    RatePeriod.SECOND: PerSecond,
    RatePeriod.MINUTE: RateLimitItemPerMinute,
    RatePeriod.HOUR: RateLimitItemPerHour,
}


def client_ip(*, remote_addr: str, forwarded_for: str | None) -> str:
    """The caller's address. X-Forwarded-For is believed only from a trusted
    proxy (IOLINKER_TRUSTED_PROXIES), and only from the right: each proxy appends
    the address it saw, so the right-most entry that is not a trusted proxy is the
    first one no caller could have written. Left of it a caller writes anything."""
    proxies = settings.IOLINKER_TRUSTED_PROXIES
    if not proxies or not forwarded_for or not _in_networks(remote_addr, proxies):
        return remote_addr
    address = remote_addr
    for entry in reversed(forwarded_for.split(",")):
        parsed = _parse_ip(entry.strip())
        if parsed is None:  # not an address: keep the nearest trusted hop's
            return address
        address = str(parsed)
        if not any(parsed in network for network in proxies):
            return address
    return address  # every hop is a trusted proxy: the left-most one


def api_check_ip(*, api: ApiDefinition, client_ip: str) -> None:
    """403 ``requestError.ipNotAllowed`` unless the API's allowlist is empty or
    names the caller's address."""
    networks = api.allowed_networks
    if networks and not _in_networks(client_ip, networks):
        raise ApiError(errors.IP_NOT_ALLOWED, f"API {api} does not accept calls from {client_ip}")


def api_check_rate(*, api: ApiDefinition) -> None:
    """Count one call against the API's rate limit; 429 with Retry-After past it."""
    if not api.rate_limit:
        return
    item = _rate_item(api.rate_limit, api.rate_limit_period)
    limiter = _Limits.get().sliding
    key = str(api.pk)
    try:
        if limiter.hit(item, key):
            return
        reset = limiter.get_window_stats(item, key).reset_time
    except StorageError as exc:
        raise _unavailable(exc) from None
    raise _too_many(f"API {api} accepts {item} calls", reset)


# The throttle on wrong credentials ---------------------------------------------


class _Blocked:
    """(api id, address) -> when its block ends (epoch seconds), this process only.

    The hot path reads it first: empty, as it nearly always is, it costs one
    truth test."""

    until: dict[tuple[int, str], float] = {}
    max_entries = 10_000


def auth_refuse_if_blocked(*, api: ApiDefinition, client_ip: str) -> None:
    """Before any credential is checked: 429 if this process knows the address
    is blocked for this API. No storage round trip."""
    if not _Blocked.until:
        return
    key = (api.pk, counted_address(client_ip))
    until = _Blocked.until.get(key)
    if until is None:
        return
    if until > time.time():
        raise _too_many(_BLOCKED_MESSAGE, until)
    _Blocked.until.pop(key, None)


def auth_refuse_if_throttled(*, api: ApiDefinition, client_ip: str) -> None:
    """Before a slow check (a password hash): 429 if the shared counter says the
    address already failed too often, or the API's failure budget (all addresses)
    is spent, so a refused attempt costs no hash. While the budget is spent every
    such attempt counts as a failure of its address: the per-address limit still
    bounds what each address may try."""
    _failures(api, client_ip, count=False)
    item = _api_failure_item()
    if item is None:
        return
    reset = _over(item, (str(api.pk), "*"), count=False)
    if reset is not None:
        _failures(api, client_ip, count=True)
        raise _too_many(_API_BUDGET_MESSAGE, reset)


def auth_failed(*, api: ApiDefinition, client_ip: str) -> None:
    """Count a wrong credential (for its address and the API's budget); 429 (and
    the address blocked here) past the address's limit or the API's budget."""
    item = _api_failure_item()
    reset = None if item is None else _over(item, (str(api.pk), "*"), count=True)
    _failures(api, client_ip, count=True)
    if reset is not None:
        raise _too_many(_API_BUDGET_MESSAGE, reset)


def _failures(api: ApiDefinition, client_ip: str, *, count: bool) -> None:
    """Look at (``count``: add one to) the address's failures on the API; past the
    limit, block the address here and raise 429."""
    item = _failure_item()
    if item is None:
        return
    reset = _over(item, (str(api.pk), counted_address(client_ip)), count=count)
    if reset is not None:
        raise _block(api, client_ip, reset)


def _over(item: RateLimitItem, ids: tuple[str, ...], *, count: bool) -> float | None:
    """None while ``ids`` is within ``item`` (``count``: one more hit), else when
    its window frees a place (epoch seconds). 503 if the storage is down."""
    limiter = _Limits.get().moving
    try:
        if (limiter.hit if count else limiter.test)(item, *ids):
            return None
        return limiter.get_window_stats(item, *ids).reset_time
    except StorageError as exc:
        raise _unavailable(exc) from None


_BLOCKED_MESSAGE = "Too many failed attempts from your address"
_API_BUDGET_MESSAGE = "Too many failed attempts on this API"


def _block(api: ApiDefinition, client_ip: str, reset: float) -> ApiError:
    if len(_Blocked.until) >= _Blocked.max_entries:
        _Blocked.until = {}
    _Blocked.until[(api.pk, counted_address(client_ip))] = reset
    return _too_many(_BLOCKED_MESSAGE, reset)


# The admin login ------------------------------------------------------------------


def login_refuse_if_throttled(*, username: str, client_ip: str) -> None:
    """Before the admin login checks a password: 429 (ApiError) if this address
    or this username failed too often within the window; 503 if the storage is
    down (fail closed)."""
    item = _login_item()
    if item is None:
        return
    for ids in _login_ids(username, client_ip):
        reset = _over(item, ids, count=False)
        if reset is not None:
            raise _too_many("Too many failed logins: try again later", reset)


def login_failed(*, username: str, client_ip: str) -> None:
    """Count a failed admin login for its address and its username."""
    item = _login_item()
    if item is None:
        return
    for ids in _login_ids(username, client_ip):
        _over(item, ids, count=True)


def _login_ids(username: str, client_ip: str) -> list[tuple[str, str]]:
    # Usernames are case-insensitive here (a guesser may vary the case), hashed
    # so that any text makes a short storage key.
    name = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    return [("address", counted_address(client_ip)), ("user", name)]


def counted_address(client_ip: str) -> str:
    """The unit the throttles count: an IPv4 address, or an IPv6 address's /64."""
    address = _parse_ip(client_ip)
    if address is None or address.version == 4:
        return client_ip if address is None else str(address)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


def _too_many(message: str, reset: float) -> ApiError:
    retry_after = max(1, math.ceil(reset - time.time()))
    return ApiError(errors.TOO_MANY_REQUESTS, message, headers={"Retry-After": str(retry_after)})


def _unavailable(exc: Exception) -> ApiError:
    # Fail closed: a limit we cannot count is not waived.
    return ApiError(errors.UNAVAILABLE, f"Rate limit storage unavailable ({type(exc).__name__})")


@lru_cache(maxsize=256)
def _rate_item(amount: int, period: str) -> RateLimitItem:
    return _PERIODS[RatePeriod(period)](amount, namespace="iolinker-rate")


def _failure_item() -> RateLimitItem | None:
    limit = settings.IOLINKER_AUTH_FAILURE_LIMIT
    if not limit:
        return None
    return _failure_item_for(limit, settings.IOLINKER_AUTH_FAILURE_WINDOW)


@lru_cache(maxsize=8)
def _failure_item_for(limit: int, window: int, namespace: str = "iolinker-authfail"):
    return PerSecond(limit, multiples=window, namespace=namespace)


def _api_failure_item() -> RateLimitItem | None:
    limit = settings.IOLINKER_AUTH_FAILURE_API_LIMIT
    if not limit or not settings.IOLINKER_AUTH_FAILURE_LIMIT:
        return None
    return _failure_item_for(limit, settings.IOLINKER_AUTH_FAILURE_WINDOW, "iolinker-apifail")


def _login_item() -> RateLimitItem | None:
    limit = settings.IOLINKER_LOGIN_FAILURE_LIMIT
    if not limit:
        return None
    return _failure_item_for(limit, settings.IOLINKER_LOGIN_FAILURE_WINDOW, "iolinker-login")


class _Limits:
    """The storage and strategies, made once per process (after a fork: the
    memory storage's expiry timer is a thread, a Redis pool holds sockets;
    workflows/process.py)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        # Exact for the few failures a credential throttle counts.
        self.moving = MovingWindowRateLimiter(storage)
        # Constant memory per API whatever its limit (an approximation that
        # weighs the previous window's count).
        self.sliding = SlidingWindowCounterRateLimiter(storage)

    @classmethod
    def get(cls) -> "_Limits":
        return _LIMITS.get()


def _storage_make() -> Storage:
    if settings.REDIS_URL:
        # One prefix per deployment (queue name): installations sharing a Redis
        # database count apart, and limits_reset clears only its own keys.
        prefix = f"iolinker:{settings.Q_CLUSTER['name']}:limits"
        return RedisStorage(
            settings.REDIS_URL, key_prefix=prefix, wrap_exceptions=True, socket_timeout=5
        )
    return MemoryStorage(wrap_exceptions=True)


def limits_reset() -> None:
    """Forget every counter and block (tests; an operator lifting blocks)."""
    _Blocked.until = {}
    instance = _LIMITS.peek()
    if instance is not None:
        instance.storage.reset()


_LIMITS = PerProcess(lambda: _Limits(_storage_make()))


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:  # ::ffff:a.b.c.d from dual-stack sockets
        return address.ipv4_mapped
    return address


def _in_networks(text: str, networks) -> bool:
    address = _parse_ip(text)
    return address is not None and any(address in network for network in networks)
