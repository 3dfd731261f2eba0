"""The admin site: Django's, with the dashboard on its index page and a login
throttled per address and per username before any password hash runs."""

import contextlib
from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from iolinker.admin_utils import bar_chart_svg
from iolinker.errors import ApiError
from triggers import throttle
from triggers.stats import trigger_refusals_since
from workflows.selectors import dashboard_stats


class ThrottledLoginForm(AdminAuthenticationForm):
    """Django's admin login form; refused (no password checked) when the
    caller's address or the username failed too often (triggers.throttle)."""

    refusal: ApiError | None = None

    def clean(self):
        username = str(self.cleaned_data.get("username") or "")[:150]
        meta = self.request.META
        client_ip = throttle.client_ip(
            remote_addr=meta.get("REMOTE_ADDR", ""),
            forwarded_for=meta.get("HTTP_X_FORWARDED_FOR"),
        )
        try:
            throttle.login_refuse_if_throttled(username=username, client_ip=client_ip)
        except ApiError as exc:  # 429, or 503 when the counts cannot be read
            self.refusal = exc
            raise ValidationError(exc.message, code="throttled") from None
        try:
            return super().clean()
        except ValidationError:
            with contextlib.suppress(ApiError):  # storage down: not counted, failed anyway
                throttle.login_failed(username=username, client_ip=client_ip)
            raise


class IolinkerAdminSite(admin.AdminSite):
    site_header = "iolinker"
    site_title = "iolinker"
    index_title = "APIs and workflows"
    login_form = ThrottledLoginForm

    def login(self, request, extra_context=None):
        """The login page; a refused attempt is the same page with the reason,
        answered 429 with Retry-After (503 if the counts are unreachable)."""
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        refusal = getattr(form, "refusal", None)
        if refusal is not None:
            response.status_code = refusal.spec.status
            for name, value in refusal.headers.items():
                response[name] = value
        return response

    def index(self, request, extra_context=None):
        stats = dashboard_stats()
        hour, day = (stats["now"] - timedelta(hours=n) for n in (1, 24))
        stats["triggers_refused"] = {
            "hour": trigger_refusals_since(hour),
            "day": trigger_refusals_since(day),
        }
        chart = bar_chart_svg(
            [
                {
                    "label": minute["at"].strftime("%H:%M"),
                    "value": minute["runs"],
                    "part": minute["failures"],
                }
                for minute in stats["per_minute"]
            ]
        )
        context = {"dashboard": stats, "runs_chart": chart}
        return super().index(request, {**context, **(extra_context or {})})
