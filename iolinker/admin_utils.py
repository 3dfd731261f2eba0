import json

from django.utils.html import format_html


def pretty_json(value) -> str:
    """Read-only JSON for admin pages."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', text)
