"""API definitions as services: the per-process cache of definitions by
(module, method), whether an API takes a call with this verb now, and its
secrets (a new token, shown once; a password, hashed).
"""

import hashlib
import secrets
import time

from django.conf import settings
from django.contrib.auth.hashers import make_password

from iolinker import errors
from iolinker.errors import ApiError
from triggers.callbacks import api_rotate_callback_secret, callback_apis_forget
from triggers.models import ApiDefinition, AuthMode

TOKEN_BYTES = 32


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
    api.token_hash = token_digest(token)
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


def token_digest(token: str) -> str:
    # Tokens are 256 random bits: a fast hash is safe and keeps each call cheap.
    return hashlib.sha256(token.encode()).hexdigest()
