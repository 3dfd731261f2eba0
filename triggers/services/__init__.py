"""The triggers app's services, one module per concern: ``calls`` (accepting a
call of an API, reading its run back), ``apis`` (definitions, their cache and
secrets), ``auth`` (caller authentication) and ``idempotency`` (keys and the
transaction they need). Views, the WSGI fast path, the admin and the commands
all call these names."""

from triggers.services.apis import (
    TOKEN_BYTES,
    api_cache_clear,
    api_check_callable,
    api_get,
    api_secrets_issue,
    api_set_enabled,
    api_set_password,
    api_set_token,
)
from triggers.services.auth import api_authenticate
from triggers.services.calls import (
    MAX_UID,
    SECRET_HEADERS,
    Accepted,
    TriggerCall,
    api_call,
    api_execution,
    api_fire,
    run_read_key,
    trigger_input_build,
)
from triggers.services.idempotency import (
    IDEMPOTENCY_HEADER,
    PURGE_BATCH,
    PURGE_TIME_BUDGET_S,
    api_call_idempotent,
    idempotency_key_check,
    idempotency_key_cutoff,
    idempotency_key_purge,
    idempotency_key_reserve,
    idempotency_keys_expired,
    request_fingerprint,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "MAX_UID",
    "PURGE_BATCH",
    "PURGE_TIME_BUDGET_S",
    "SECRET_HEADERS",
    "TOKEN_BYTES",
    "Accepted",
    "TriggerCall",
    "api_authenticate",
    "api_cache_clear",
    "api_call",
    "api_call_idempotent",
    "api_check_callable",
    "api_execution",
    "api_fire",
    "api_get",
    "api_secrets_issue",
    "api_set_enabled",
    "api_set_password",
    "api_set_token",
    "idempotency_key_check",
    "idempotency_key_cutoff",
    "idempotency_key_purge",
    "idempotency_key_reserve",
    "idempotency_keys_expired",
    "request_fingerprint",
    "run_read_key",
    "trigger_input_build",
]
