"""The APIs admin: API definitions (token shown once, password hashed, enable
switch, Debug button), their call statistics, and completion callback
deliveries (also shown on a run's page through workflows' inline registry)."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from iolinker.admin_utils import ADMIN_MEDIA, copy_button
from iolinker.errors import ApiError
from triggers import callbacks, services
from triggers.models import ApiDefinition, AuthMode, CallbackDelivery, RatePeriod
from triggers.selectors import api_curl_example
from triggers.stats import trigger_refusals_by_api
from workflows.admin import ReadOnlyMixin, execution_inline_register, refusal_message
from workflows.ids import uid_datetime
from workflows.selectors import execution_wait_final, runs_by_parent

# The Debug button waits this long for its run to finish before showing it (a
# run still queued or running is shown as it is; reload to follow it).
DEBUG_WAIT_SECONDS = 3.0


class ApiDefinitionForm(forms.ModelForm):
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="For user + password authentication. Stored hashed; leave blank to keep "
        "the current password.",
    )

    class Meta:
        model = ApiDefinition
        fields = [
            "module",
            "method",
            "http_method",
            "workflow",
            "enabled",
            "auth_mode",
            "auth_user",
            "password",
            "debug_payload",
            "publish_example",
            "description",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "rate_limit_period" in self.fields:  # only meaningful with a rate limit
            self.fields["rate_limit_period"].required = False

    def clean_rate_limit_period(self):
        return self.cleaned_data.get("rate_limit_period") or RatePeriod.MINUTE

    def clean(self):
        data = super().clean()
        if data.get("auth_mode") == AuthMode.PASSWORD:
            if not data.get("auth_user"):
                self.add_error("auth_user", "User + password authentication needs a user.")
            if not data.get("password") and not self.instance.password_hash:
                self.add_error("password", "Set a password for user + password authentication.")
        return data


INVALID_NAMES = "— (the module or method is not a valid URL segment: correct it and save)"


def _url_html(api: ApiDefinition):
    if api.url is None:
        return INVALID_NAMES
    return format_html("<code>{}</code> {}", api.url, copy_button(api.url, "Copy URL"))


@admin.register(ApiDefinition)
class ApiDefinitionAdmin(admin.ModelAdmin):
    form = ApiDefinitionForm
    list_display = [
        "module",
        "method",
        "http_method",
        "auth_mode",
        "enabled_switch",
        "url_with_copy",
        "workflow",
        "last_call",
        "calls_24h",
        "failures_24h",
    ]
    list_display_links = ["module", "method"]
    list_filter = ["module", "enabled", "http_method", "auth_mode"]
    search_fields = ["module", "method", "description"]
    search_help_text = "Module, method name or description"
    list_select_related = ["workflow"]
    readonly_fields = [
        "full_url",
        "curl_example",
        "secret_state",
        "callback_secret_state",
        "created_at",
        "updated_at",
    ]
    actions = ["enable_apis", "disable_apis", "rotate_tokens", "rotate_callback_secrets"]
    fieldsets = [
        (None, {"fields": ["module", "method", "http_method", "workflow", "enabled", "full_url"]}),
        ("Try it", {"fields": ["curl_example", "debug_payload", "publish_example"]}),
        ("Sync calls", {"fields": ["sync_enabled", "sync_timeout"]}),
        ("Authentication", {"fields": ["auth_mode", "secret_state", "auth_user", "password"]}),
        ("Limits", {"fields": ["ip_allowlist", ("rate_limit", "rate_limit_period")]}),
        ("Completion callback", {"fields": ["callback_url", "callback_secret_state"]}),
        (None, {"fields": ["description", "created_at", "updated_at"]}),
    ]
    change_form_template = "admin/triggers/apidefinition/change_form.html"
    change_list_template = "admin/triggers/apidefinition/change_list.html"
    media = ADMIN_MEDIA

    # --- The list: counts for the page's rows, in two queries ----------------

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        apis = list(changelist.result_list)
        since = timezone.now() - timedelta(hours=24)
        ids = [api.pk for api in apis]
        runs = runs_by_parent(field="api", ids=ids, since=since)
        refused = trigger_refusals_by_api(api_ids=ids, since=since)
        for api in apis:
            api.run_stats = runs.get(api.pk, {})
            api.refused_24h = refused.get(api.pk, 0)
        return changelist

    @admin.display(description="enabled", ordering="enabled")
    def enabled_switch(self, obj: ApiDefinition):
        url = reverse("admin:triggers_apidefinition_enabled", args=[obj.pk])
        return format_html(
            '<button type="submit" form="iol-enabled-form" formaction="{}" name="enabled" '
            'value="{}" class="iol-switch{}" role="switch" aria-checked="{}" '
            'title="Click to {} this API">{}</button>',
            url,
            "0" if obj.enabled else "1",
            " on" if obj.enabled else "",
            "true" if obj.enabled else "false",
            "disable" if obj.enabled else "enable",
            "on" if obj.enabled else "off",
        )

    @admin.display(description="URL")
    def url_with_copy(self, obj: ApiDefinition):
        return _url_html(obj)

    @admin.display(description="last call")
    def last_call(self, obj: ApiDefinition):
        last = getattr(obj, "run_stats", {}).get("last_uid")
        if not last:
            return "—"
        url = reverse("admin:workflows_execution_change", args=[last])
        when = uid_datetime(last)
        return format_html(
            '<a href="{}" title="{}">{} ago</a>',
            url,
            when.isoformat(timespec="seconds"),
            _ago(timezone.now() - when),
        )

    @admin.display(description="calls 24 h")
    def calls_24h(self, obj: ApiDefinition):
        runs = getattr(obj, "run_stats", {}).get("runs", 0)
        if not runs:
            return 0
        url = reverse("admin:workflows_execution_changelist")
        return format_html('<a href="{}?api__id__exact={}&amp;since=24h">{}</a>', url, obj.pk, runs)

    @admin.display(description="failures 24 h")
    def failures_24h(self, obj: ApiDefinition):
        failed = getattr(obj, "run_stats", {}).get("failures", 0)
        refused = getattr(obj, "refused_24h", 0)
        text = format_html(
            '<span title="runs failed or timed out">{}</span>'
            ' / <span title="calls refused (4xx)">{} refused</span>',
            failed,
            refused,
        )
        if failed or refused:
            return format_html('<span class="iol-bad">{}</span>', text)
        return text

    # --- Per-object buttons: enable switch, Debug ---------------------------

    def get_urls(self):
        return [
            path(
                "<int:pk>/enabled/",
                self.admin_site.admin_view(self.enabled_view),
                name="triggers_apidefinition_enabled",
            ),
            path(
                "<int:pk>/debug/",
                self.admin_site.admin_view(self.debug_view),
                name="triggers_apidefinition_debug",
            ),
            *super().get_urls(),
        ]

    def enabled_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        api = get_object_or_404(ApiDefinition, pk=pk)
        if not self.has_change_permission(request, api):
            raise PermissionDenied
        enabled = request.POST.get("enabled") == "1"
        services.api_set_enabled(apis=ApiDefinition.objects.filter(pk=pk), enabled=enabled)
        self.message_user(
            request, f"{api} {'enabled' if enabled else 'disabled'}.", messages.SUCCESS
        )
        back = request.headers.get("referer", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}):
            back = reverse("admin:triggers_apidefinition_changelist")
        return HttpResponseRedirect(back)

    def debug_view(self, request, pk: int):
        """Fire the API with its debug payload through the service HTTP calls use
        (as `fire_api` does: without caller authentication), then show the run."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        api = get_object_or_404(ApiDefinition, pk=pk)
        if not self.has_change_permission(request, api):
            raise PermissionDenied
        try:
            accepted = services.api_fire(
                api=api, headers={"user-agent": f"iolinker admin debug ({request.user})"}
            )
        except (ApiError, DatabaseError) as exc:
            # Refused, or the queue or the database down: a message, never a 500 page.
            reason = exc.message if isinstance(exc, ApiError) else refusal_message(exc)
            self.message_user(request, f"Debug call of {api} refused: {reason}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:triggers_apidefinition_change", args=[pk]))
        execution = execution_wait_final(uid=accepted.uid, timeout=DEBUG_WAIT_SECONDS)
        status = execution.status if execution else "deleted"
        self.message_user(
            request,
            f"Debug call of {api} with its debug payload: run {accepted.uid} ({status}).",
            messages.SUCCESS if status in ("succeeded", "queued", "running") else messages.WARNING,
        )
        return HttpResponseRedirect(
            reverse("admin:workflows_execution_change", args=[accepted.uid])
        )

    @admin.display(description="curl")
    def curl_example(self, obj: ApiDefinition):
        if not obj.pk:
            return "Save the API first."
        if obj.url is None:
            return INVALID_NAMES
        command = api_curl_example(obj)
        return format_html(
            '<pre class="iol-curl">{}</pre>{}', command, copy_button(command, "Copy curl")
        )

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "callback_url":
            kwargs["assume_scheme"] = "https"  # what Django 6 does; silences its warning
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="URL")
    def full_url(self, obj: ApiDefinition):
        if not obj.pk:
            return "—"
        return _url_html(obj)

    @admin.display(description="Secret")
    def secret_state(self, obj: ApiDefinition):
        if obj.auth_mode == AuthMode.TOKEN:
            return "Token set (stored hashed)" if obj.token_hash else "No token yet"
        if obj.auth_mode == AuthMode.PASSWORD:
            return "Password set (stored hashed)" if obj.password_hash else "No password yet"
        return "No authentication"

    @admin.display(description="Callback signing secret")
    def callback_secret_state(self, obj: ApiDefinition):
        if obj.callback_secret:
            return "Set (shown once when generated; rotate it with the action on the API list)"
        return "Generated when a callback URL is saved"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        issued = services.api_secrets_issue(api=obj, password=form.cleaned_data.get("password"))
        if "token" in issued:
            self._show_new_token(request, obj, issued["token"])
        if "callbackSecret" in issued:
            self._show_new_callback_secret(request, obj, issued["callbackSecret"])

    def _show_new_callback_secret(self, request, obj, secret: str) -> None:
        self.message_user(
            request,
            format_html(
                "Callback signing secret for {}: <code>{}</code> — copy it now into the "
                "receiver that verifies the callbacks: it is not shown again.",
                obj,
                secret,
            ),
            messages.WARNING,
        )

    def _show_new_token(self, request, obj, token: str) -> None:
        self.message_user(
            request,
            format_html(
                "Token for {}: <code>{}</code> — copy it now: it is stored hashed and "
                "cannot be shown again.",
                obj,
                token,
            ),
            messages.WARNING,
        )

    @admin.action(description="Enable selected APIs", permissions=["change"])
    def enable_apis(self, request, queryset):
        count = services.api_set_enabled(apis=queryset, enabled=True)
        self.message_user(request, f"Enabled {count} API(s).", messages.SUCCESS)

    @admin.action(description="Disable selected APIs", permissions=["change"])
    def disable_apis(self, request, queryset):
        count = services.api_set_enabled(apis=queryset, enabled=False)
        self.message_user(request, f"Disabled {count} API(s).", messages.SUCCESS)

    @admin.action(
        description="Rotate the token of selected token-auth APIs", permissions=["change"]
    )
    def rotate_tokens(self, request, queryset):
        for api in queryset.filter(auth_mode=AuthMode.TOKEN):
            self._show_new_token(request, api, services.api_set_token(api=api))

    @admin.action(
        description="Rotate the callback signing secret of selected APIs", permissions=["change"]
    )
    def rotate_callback_secrets(self, request, queryset):
        for api in queryset:
            secret = callbacks.api_rotate_callback_secret(api=api)
            self._show_new_callback_secret(request, api, secret)


def _ago(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _attempt_log(delivery: CallbackDelivery):
    rows = [
        (
            attempt.number,
            attempt.started_at.isoformat(timespec="seconds"),
            attempt.duration_ms,
            attempt.status_code or "—",
            attempt.error or "delivered",
            attempt.next_attempt_at.isoformat(timespec="seconds")
            if attempt.next_attempt_at
            else "—",
        )
        for attempt in delivery.attempt_log.all()
    ]
    if not rows:
        return "No attempt yet"
    return format_html(
        '<table style="margin:0"><tr><th>#</th><th>started</th><th>ms</th><th>status</th>'
        "<th>result</th><th>next attempt</th></tr>{}</table>",
        format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows
        ),
    )


class CallbackDeliveryInline(admin.StackedInline):
    """The run's completion callback and its attempts, on the execution page."""

    model = CallbackDelivery
    extra = 0
    can_delete = False
    fields = [("status", "attempts", "next_attempt_at", "finished_at"), "attempt_log"]
    readonly_fields = ["status", "attempts", "next_attempt_at", "finished_at", "attempt_log"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Attempts")
    def attempt_log(self, obj: CallbackDelivery):
        return _attempt_log(obj)


execution_inline_register(CallbackDeliveryInline)


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["execution_uid", "api", "status", "attempts", "next_attempt_at", "created_at"]
    list_filter = ["status"]
    list_select_related = ["execution__api"]
    search_fields = ["=execution__uid"]
    search_help_text = "Exact execution uid"
    show_full_result_count = False
    fields = [
        ("execution_uid", "api", "status"),
        ("attempts", "next_attempt_at", "created_at", "finished_at"),
        "attempt_log",
    ]
    readonly_fields = [
        "execution_uid",
        "api",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "finished_at",
        "attempt_log",
    ]

    @admin.display(description="execution", ordering="execution_id")
    def execution_uid(self, obj: CallbackDelivery):
        url = reverse("admin:workflows_execution_change", args=[obj.execution_id])
        return format_html('<a href="{}">{}</a>', url, obj.execution_id)

    @admin.display(description="API")
    def api(self, obj: CallbackDelivery):
        return obj.execution.api or "—"

    @admin.display(description="Attempts")
    def attempt_log(self, obj: CallbackDelivery):
        return _attempt_log(obj)
