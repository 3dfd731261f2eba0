"""The workflows app's admin, one module per page family: ``workflow``
(workflows, steps, versions, run/clone/export/import), ``execution`` (runs and
their buttons), ``configuration`` (environment variables, credentials) and
``common`` (what they share). Importing the package registers them all."""

from workflows.admin.common import (
    REFUSALS,
    LimitedCountPaginator,
    OperateMixin,
    ReadOnlyMixin,
    refusal_message,
)
from workflows.admin.configuration import CredentialAdmin, EnvironmentVariableAdmin
from workflows.admin.execution import (
    EXECUTION_INLINES,
    ExecutionAdmin,
    TimeRangeFilter,
    execution_inline_register,
)
from workflows.admin.workflow import StepFormSet, StepInline, WorkflowAdmin

__all__ = [
    "EXECUTION_INLINES",
    "REFUSALS",
    "CredentialAdmin",
    "EnvironmentVariableAdmin",
    "ExecutionAdmin",
    "LimitedCountPaginator",
    "OperateMixin",
    "ReadOnlyMixin",
    "StepFormSet",
    "StepInline",
    "TimeRangeFilter",
    "WorkflowAdmin",
    "execution_inline_register",
    "refusal_message",
]
