"""Small pieces the admin pages share: JSON, badges, copy buttons, a bar chart.

Everything is served from the project's static files (static/iolinker/): no CDN.
"""

import json

from django import forms
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# The admin's own stylesheet and script (copy buttons), on every page that uses them.
ADMIN_MEDIA = forms.Media(css={"all": ["iolinker/admin.css"]}, js=["iolinker/admin.js"])


def pretty_json(value) -> str:
    """Read-only JSON for admin pages."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', text)


def status_badge(status: str | None) -> SafeString:
    """A run status as a coloured badge (colours in static/iolinker/admin.css)."""
    if not status:
        return format_html("{}", "—")
    return format_html('<span class="iol-badge iol-{}">{}</span>', status, status)


def copy_button(text: str, label: str = "Copy") -> SafeString:
    """A button that copies ``text`` to the clipboard (static/iolinker/admin.js)."""
    return format_html(
        '<button type="button" class="iol-copy" data-copy="{}" title="{}">{}</button>',
        text,
        label,
        label,
    )


def bar_chart_svg(bars: list[dict], *, width: int = 600, height: int = 120) -> SafeString:
    """A bar per entry of ``bars`` ({"label", "value", "part"}: ``part`` of the
    value drawn in red, e.g. failures), scaled to the largest value."""
    top = max([bar["value"] for bar in bars] + [1])
    step = width / max(len(bars), 1)
    rects = []
    for i, bar in enumerate(bars):
        h = round(bar["value"] / top * (height - 14), 1)
        part = round(bar.get("part", 0) / top * (height - 14), 1)
        x = round(i * step + 1, 1)
        w = round(max(step - 2, 1), 1)
        rects.append(
            (
                x,
                height - h,
                w,
                h,
                bar["label"],
                bar["value"],
                bar.get("part", 0),
                x,
                height - part,
                w,
                part,
            )
        )
    body = format_html_join(
        "",
        '<g><rect x="{}" y="{}" width="{}" height="{}" fill="#79aec8"><title>{}: {} runs, '
        '{} failed</title></rect><rect x="{}" y="{}" width="{}" height="{}" fill="#ba2121"/></g>',
        rects,
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="iol-chart" role="img" width="{}" '
        'height="{}" viewBox="0 0 {} {}"><text x="2" y="10" font-size="10" fill="#666">max {}'
        '</text><line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/>{}</svg>',
        width,
        height,
        width,
        height,
        top,
        height - 0.5,
        width,
        height - 0.5,
        body,
    )
