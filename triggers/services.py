import hashlib
import hmac
import secrets

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.cache import caches

from iolinker import errors
from iolinker.errors import ApiError
from triggers.models import ApiDefinition, AuthMode
from workflows.models import Execution
from workflows.services import execution_start

TOKEN_BYTES = 32


def _token_digest(token: str) -> str:
    # Tokens are 256 random bits: a fast hash is safe and keeps each call cheap.
    return hashlib.sha256(token.encode()).hexdigest()


def api_get(*, module: str, method: str) -> ApiDefinition:
    api = ApiDefinition.objects.select_related("workflow").filter(module=module, method=method)
    api = api.first()
    if api is None:
        raise ApiError(errors.NOT_FOUND, f"API {module}/{method} not found")
    return api


def api_set_token(*, api: ApiDefinition) -> str:
    """Give the API a new random token; return it (the only time it is readable)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    api.token_hash = _token_digest(token)
    api.save(update_fields=["token_hash", "updated_at"])
    return token


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


def api_authenticate(*, api: ApiDefinition, headers) -> None:
    """Check the caller's credentials (headers `token`, or `user` + `password`)."""
    if api.auth_mode == AuthMode.TOKEN:
        token = headers.get("token", "")
        if not token:
            raise ApiError(errors.TOKEN_REQUIRED)
        if not api.token_hash or not hmac.compare_digest(_token_digest(token), api.token_hash):
            raise ApiError(errors.UNAUTHORIZED, "Invalid token")
    elif api.auth_mode == AuthMode.PASSWORD:
        user, password = headers.get("user", ""), headers.get("password", "")
        if not user or not password:
            raise ApiError(errors.CREDENTIALS_REQUIRED)
        if not _password_ok(api, user, password):
            raise ApiError(errors.UNAUTHORIZED, "Invalid user or password")


def _password_ok(api: ApiDefinition, user: str, password: str) -> bool:
    """Verify user + password, remembering a success briefly.

    The slow password hash runs once per credential per cache period. The
    cache key is an HMAC over the stored hash and the presented credentials,
    so changing the password (or user) makes old entries unreachable.
    """
    if not api.auth_user or not api.password_hash:
        return False
    message = "\0".join([str(api.pk), api.password_hash, user, password]).encode()
    key = "pw:" + hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()
    cache = caches["credentials"]
    if cache.get(key):
        return True
    user_ok = hmac.compare_digest(user.encode(), api.auth_user.encode())
    password_ok = check_password(password, api.password_hash)  # always run: no timing hint
    if user_ok and password_ok:
        cache.set(key, True)
        return True
    return False


def trigger_input_build(*, http_method: str, body: dict, query: dict, headers: dict) -> dict:
    """The trigger input a workflow sees; secret headers are never stored."""
    redacted = settings.IOLINKER_REDACTED_HEADERS
    return {
        "method": http_method,
        "body": body,
        "query": query,
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() not in redacted},
    }


def api_trigger(*, api: ApiDefinition, trigger_input: dict) -> Execution:
    """Accept a call of an authenticated, callable API: record and queue its run."""
    return execution_start(workflow=api.workflow, api=api, trigger_input=trigger_input)
