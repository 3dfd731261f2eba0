"""Caller authentication of an API: its IP allowlist, then its credentials
(header ``token``, or ``user`` + ``password``), compared in constant time, the
wrong-credential throttle running before any password hash (triggers.throttle).
"""

import hashlib
import hmac
from collections.abc import Mapping

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.cache import caches

from iolinker import errors
from iolinker.errors import ApiError
from triggers import throttle
from triggers.models import ApiDefinition, AuthMode
from triggers.services.apis import token_digest


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
        if not api.token_hash or not hmac.compare_digest(token_digest(token), api.token_hash):
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
