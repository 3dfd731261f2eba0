"""What every admin page of the workflows app shares: read-only run records, a
bounded count for huge lists, who may operate (run, re-run, cancel), and what a
button says when the domain refuses or the queue or database is down."""

from django.core.paginator import Paginator
from django.db import DatabaseError
from django.utils.functional import cached_property

from workflows.errors import WorkflowsError

# What a run, re-run or cancel button may meet besides success: a refusal of the
# domain (workflows/errors.py: disabled, already ended, queue or uid unavailable)
# or the database down. The admin says so; it never answers a 500 page.
REFUSALS = (WorkflowsError, DatabaseError)


def refusal_message(exc: Exception) -> str:
    if isinstance(exc, WorkflowsError):
        return str(exc) or "Service temporarily unavailable, try again later"
    return "The database is unavailable, try again later"


class OperateMixin:
    """The ``operate`` permission of admin actions and buttons (run, re-run,
    cancel): for who may change workflows, not for who only views them or runs."""

    def has_operate_permission(self, request):
        return request.user.has_perm("workflows.change_workflow")


class ReadOnlyMixin:
    """Run records are read-only in the admin (runs, deliveries)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LimitedCountPaginator(Paginator):
    """Counts at most LIMIT rows: a COUNT over a million runs reads them all, a
    bounded one stops early. Past the limit the list says "more than" and pages
    stop there (filter or search to narrow it)."""

    LIMIT = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.LIMIT + 1].count()

    @property
    def is_limited(self) -> bool:
        return self.count > self.LIMIT
