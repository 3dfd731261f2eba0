from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from triggers import callbacks, services
from triggers.models import ApiDefinition, AuthMode, CallbackDelivery, RatePeriod


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


@admin.register(ApiDefinition)
class ApiDefinitionAdmin(admin.ModelAdmin):
    form = ApiDefinitionForm
    list_display = [
        "module",
        "method",
        "http_method",
        "auth_mode",
        "enabled",
        "full_url",
        "workflow",
    ]
    list_display_links = ["module", "method"]
    list_filter = ["module", "enabled", "http_method", "auth_mode"]
    search_fields = ["module", "method", "description"]
    list_select_related = ["workflow"]
    readonly_fields = [
        "full_url",
        "secret_state",
        "callback_secret_state",
        "created_at",
        "updated_at",
    ]
    actions = ["enable_apis", "disable_apis", "rotate_tokens", "rotate_callback_secrets"]
    fieldsets = [
        (None, {"fields": ["module", "method", "http_method", "workflow", "enabled", "full_url"]}),
        ("Sync calls", {"fields": ["sync_enabled", "sync_timeout"]}),
        ("Authentication", {"fields": ["auth_mode", "secret_state", "auth_user", "password"]}),
        ("Limits", {"fields": ["ip_allowlist", ("rate_limit", "rate_limit_period")]}),
        ("Completion callback", {"fields": ["callback_url", "callback_secret_state"]}),
        (None, {"fields": ["debug_payload", "description", "created_at", "updated_at"]}),
    ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "callback_url":
            kwargs["assume_scheme"] = "https"  # what Django 6 does; silences its warning
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="URL")
    def full_url(self, obj: ApiDefinition):
        if not obj.pk:
            return "—"
        return format_html("<code>{}</code>", obj.url)

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
        password = form.cleaned_data.get("password")
        if obj.auth_mode == AuthMode.PASSWORD and password:
            services.api_set_password(api=obj, user=obj.auth_user, password=password)
        if obj.auth_mode == AuthMode.TOKEN and not obj.token_hash:
            self._show_new_token(request, obj, services.api_set_token(api=obj))
        if obj.callback_url and not obj.callback_secret:
            secret = callbacks.api_rotate_callback_secret(api=obj)
            self._show_new_callback_secret(request, obj, secret)

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

    @admin.action(description="Enable selected APIs")
    def enable_apis(self, request, queryset):
        count = services.api_set_enabled(apis=queryset, enabled=True)
        self.message_user(request, f"Enabled {count} API(s).", messages.SUCCESS)

    @admin.action(description="Disable selected APIs")
    def disable_apis(self, request, queryset):
        count = services.api_set_enabled(apis=queryset, enabled=False)
        self.message_user(request, f"Disabled {count} API(s).", messages.SUCCESS)

    @admin.action(description="Rotate the token of selected token-auth APIs")
    def rotate_tokens(self, request, queryset):
        for api in queryset.filter(auth_mode=AuthMode.TOKEN):
            self._show_new_token(request, api, services.api_set_token(api=api))

    @admin.action(description="Rotate the callback signing secret of selected APIs")
    def rotate_callback_secrets(self, request, queryset):
        for api in queryset:
            secret = callbacks.api_rotate_callback_secret(api=api)
            self._show_new_callback_secret(request, api, secret)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(ReadOnlyAdmin):
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
