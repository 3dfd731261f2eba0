"""The services the HTTP layer calls, imported in this one place: when a service
moves or is renamed (``triggers/services``, ``workflows``), this module is the
one line to change for every view, the DRF parts and the WSGI fast path.
"""

from triggers.services import (
    IDEMPOTENCY_HEADER,
    Accepted,
    TriggerCall,
    api_authenticate,
    api_call,
    api_check_callable,
    api_execution,
    api_get,
    run_read_key,
)
from triggers.stats import trigger_refusal_record
from triggers.throttle import api_check_rate, client_ip
from workflows.lifecycle import NotCancellable, execution_cancel
from workflows.selectors import execution_status, execution_wait_final

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Accepted",
    "NotCancellable",
    "TriggerCall",
    "api_authenticate",
    "api_call",
    "api_check_callable",
    "api_check_rate",
    "api_execution",
    "api_get",
    "client_ip",
    "execution_cancel",
    "execution_status",
    "execution_wait_final",
    "run_read_key",
    "trigger_refusal_record",
]
