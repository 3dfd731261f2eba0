"""The admin site: Django's, with the dashboard on its index page."""

from django.contrib import admin

from iolinker.admin_utils import bar_chart_svg
from workflows.selectors import dashboard_stats


class IolinkerAdminSite(admin.AdminSite):
    site_header = "iolinker"
    site_title = "iolinker"
    index_title = "APIs and workflows"

    def index(self, request, extra_context=None):
        stats = dashboard_stats()
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
