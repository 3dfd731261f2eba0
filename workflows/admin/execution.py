"""The execution admin: runs listed without full counts, filtered on indexed
columns, one run's page with its steps timeline and the re-run and cancel
buttons; inlines other apps add (execution_inline_register)."""

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.options import ShowFacets
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone

from iolinker.admin_utils import ADMIN_MEDIA, pretty_json, status_badge
from workflows import lifecycle
from workflows.admin.common import (
    REFUSALS,
    LimitedCountPaginator,
    OperateMixin,
    ReadOnlyMixin,
    refusal_message,
)
from workflows.ids import uid_at
from workflows.models import (
    Execution,
)


class TimeRangeFilter(admin.SimpleListFilter):
    """Runs created in the last hour, day, ...: a range of uids (they are
    time-ordered), so the primary key serves it, not a created_at index."""

    title = "created"
    parameter_name = "since"
    RANGES = {
        "15m": ("Last 15 minutes", timedelta(minutes=15)),
        "1h": ("Last hour", timedelta(hours=1)),
        "24h": ("Last 24 hours", timedelta(hours=24)),
        "7d": ("Last 7 days", timedelta(days=7)),
        "30d": ("Last 30 days", timedelta(days=30)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.RANGES.items()]

    def queryset(self, request, queryset):
        entry = self.RANGES.get(self.value() or "")
        if entry is None:
            return queryset
        return queryset.filter(uid__gte=uid_at(timezone.now() - entry[1]))


# Inlines other apps show on the execution page (triggers adds its completion
# callback; workflows never imports triggers). Filled at admin autodiscovery.
EXECUTION_INLINES: list[type[admin.options.InlineModelAdmin]] = []


def execution_inline_register(inline: type[admin.options.InlineModelAdmin]) -> None:
    """Show ``inline`` on every execution's admin page."""
    if inline not in EXECUTION_INLINES:
        EXECUTION_INLINES.append(inline)


@admin.register(Execution)
class ExecutionAdmin(OperateMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "uid_text",
        "workflow",
        "api",
        "status_badge",
        "created_at",
        "duration_text",
    ]
    list_filter = ["status", TimeRangeFilter, "workflow", "api"]
    list_select_related = ["workflow", "api"]
    actions = ["cancel_selected", "rerun_selected"]
    search_fields = ["=uid"]  # (shows the search box; get_search_results does the lookup)
    search_help_text = "Exact execution uid"
    # A million runs: no full COUNT (neither of the whole table nor per filter
    # choice), a bounded one for the pages, sorting only by uid (= creation time;
    # the primary key), filters on indexed columns (workflows/models.py).
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    paginator = LimitedCountPaginator
    sortable_by = ["uid_text"]

    def get_search_results(self, request, queryset, search_term):
        """An exact uid through the primary key. Django's `=uid` compares
        UPPER(uid::text), a scan of the whole table (measured: 0.9 s on a
        million runs); anything that is not a uid finds nothing."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isascii() and term.isdigit() and len(term) <= 19 and int(term) < 2**63:
            return queryset.filter(uid=int(term)), False
        return queryset.none(), False

    inlines = EXECUTION_INLINES
    change_form_template = "admin/workflows/execution/change_form.html"
    media = ADMIN_MEDIA
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("uid_text", "status_badge", "attempts"),
                    ("workflow", "version_number", "api"),
                    ("parent", "rerun_of", "resume_at"),
                    ("created_at", "started_at", "finished_at", "duration_text"),
                    "error",
                ]
            },
        ),
        ("Trigger input", {"fields": ["input_json"]}),
        ("Steps", {"fields": ["timeline"]}),
        ("Output", {"fields": ["output_json"]}),
    ]
    readonly_fields = [
        "uid_text",
        "status_badge",
        "attempts",
        "workflow",
        "version_number",
        "api",
        "parent",
        "rerun_of",
        "resume_at",
        "created_at",
        "started_at",
        "finished_at",
        "duration_text",
        "error",
        "input_json",
        "timeline",
        "output_json",
    ]

    @admin.display(description="uid", ordering="uid")
    def uid_text(self, obj):
        return str(obj.uid)

    @admin.display(description="status")
    def status_badge(self, obj):
        return status_badge(obj.status)

    @admin.display(description="Version")
    def version_number(self, obj):
        return f"v{obj.version.number}" if obj.version else "—"

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Step runs")
    def timeline(self, obj):
        runs = list(obj.step_runs.order_by("started_at", "position", "id"))
        if not runs:
            return "No step has finished yet."
        start = min([run.started_at for run in runs] + [obj.started_at or runs[0].started_at])
        end = max([run.finished_at for run in runs] + [obj.finished_at or runs[-1].finished_at])
        span = max((end - start).total_seconds(), 0.001)
        rows = [
            {
                "run": run,
                "offset_ms": round((run.started_at - start).total_seconds() * 1000),
                "left": round(100 * (run.started_at - start).total_seconds() / span, 2),
                "width": round(100 * (run.finished_at - run.started_at).total_seconds() / span, 2),
                "input": pretty_json(run.input),
                "output": pretty_json(run.output),
                "badge": status_badge(run.status),
            }
            for run in runs
        ]
        return render_to_string("admin/workflows/execution/timeline.html", {"rows": rows})

    # --- Buttons on the run's page: the same services as the list actions ----

    def get_urls(self):
        return [
            path(
                "<int:uid>/rerun/",
                self.admin_site.admin_view(self.rerun_view),
                name="workflows_execution_rerun",
            ),
            path(
                "<int:uid>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="workflows_execution_cancel",
            ),
            *super().get_urls(),
        ]

    def _button_target(self, request, uid: int) -> Execution:
        execution = get_object_or_404(Execution, uid=uid)
        if not self.has_operate_permission(request):
            raise PermissionDenied
        return execution

    def rerun_view(self, request, uid: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        execution = self._button_target(request, uid)
        try:
            new = lifecycle.execution_rerun(uid=execution.uid)
        except REFUSALS as exc:
            self.message_user(request, f"{uid}: {refusal_message(exc)}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:workflows_execution_change", args=[uid]))
        self.message_user(request, f"{execution.uid} re-run as {new.uid}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:workflows_execution_change", args=[new.uid]))

    def cancel_view(self, request, uid: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        execution = self._button_target(request, uid)
        self._cancel(request, execution)
        return HttpResponseRedirect(reverse("admin:workflows_execution_change", args=[uid]))

    def _cancel(self, request, execution: Execution) -> None:
        try:
            lifecycle.execution_cancel(uid=execution.uid)
            self.message_user(request, f"Cancel requested for {execution.uid}.")
        except REFUSALS as exc:
            self.message_user(request, f"{execution.uid}: {refusal_message(exc)}", messages.WARNING)

    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel_selected(self, request, queryset):
        for execution in queryset:
            self._cancel(request, execution)

    @admin.action(description="Re-run selected runs with the same input", permissions=["operate"])
    def rerun_selected(self, request, queryset):
        for execution in queryset:
            try:
                new = lifecycle.execution_rerun(uid=execution.uid)
            except REFUSALS as exc:
                self.message_user(request, refusal_message(exc), messages.ERROR)
                continue
            self.message_user(request, f"{execution.uid} re-run as {new.uid}.", messages.SUCCESS)

    @admin.display(description="Duration")
    def duration_text(self, obj):
        return f"{obj.duration.total_seconds():.3f} s" if obj.duration else "—"

    @admin.display(description="Trigger input")
    def input_json(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="Output")
    def output_json(self, obj):
        return pretty_json(obj.output)
