"""A template filter showing a number of seconds as a short human duration."""

from django import template

register = template.Library()


@register.filter
def seconds(value) -> str:
    """A duration in seconds as "12 ms", "3.4 s" or "—"."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"
