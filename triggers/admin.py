from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from triggers import services
from triggers.models import ApiDefinition, AuthMode


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
    readonly_fields = ["full_url", "secret_state", "created_at", "updated_at"]
    actions = ["enable_apis", "disable_apis", "rotate_tokens"]
    fieldsets = [
        (None, {"fields": ["module", "method", "http_method", "workflow", "enabled", "full_url"]}),
        ("Sync calls", {"fields": ["sync_enabled", "sync_timeout"]}),
        ("Authentication", {"fields": ["auth_mode", "secret_state", "auth_user", "password"]}),
        (None, {"fields": ["debug_payload", "description", "created_at", "updated_at"]}),
    ]

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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        password = form.cleaned_data.get("password")
        if obj.auth_mode == AuthMode.PASSWORD and password:
            services.api_set_password(api=obj, user=obj.auth_user, password=password)
        if obj.auth_mode == AuthMode.TOKEN and not obj.token_hash:
            self._show_new_token(request, obj, services.api_set_token(api=obj))

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
