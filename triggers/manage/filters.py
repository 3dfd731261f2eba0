"""The management lists' query filters (django-filter), each on an indexed
column: runs by status, API, workflow and creation time. A creation-time bound
is a bound on the uid (uids are time-ordered, workflows/ids.py ``uid_at``), so
the primary key serves it and no created_at index is needed.
"""

import django_filters

from triggers.models import ApiDefinition
from workflows.ids import uid_at
from workflows.models import Execution, ExecutionStatus, Workflow


class ApiFilter(django_filters.FilterSet):
    workflow = django_filters.NumberFilter(field_name="workflow_id")

    class Meta:
        model = ApiDefinition
        fields = ["module", "method", "enabled", "workflow"]


class WorkflowFilter(django_filters.FilterSet):
    class Meta:
        model = Workflow
        fields = ["name", "enabled"]


class ExecutionFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=ExecutionStatus.choices)
    api = django_filters.NumberFilter(field_name="api_id")
    workflow = django_filters.NumberFilter(field_name="workflow_id")
    createdAfter = django_filters.IsoDateTimeFilter(
        method="created_after", label="Created at or after (ISO 8601)"
    )
    createdBefore = django_filters.IsoDateTimeFilter(
        method="created_before", label="Created before (ISO 8601)"
    )

    class Meta:
        model = Execution
        fields = ["status", "api", "workflow"]

    def created_after(self, queryset, name, value):
        return queryset.filter(uid__gte=_uid_bound(value))

    def created_before(self, queryset, name, value):
        return queryset.filter(uid__lt=_uid_bound(value))


def _uid_bound(when) -> int:
    # A date far in the future would overflow the 63-bit uid column.
    return min(uid_at(when), 2**63 - 1)
