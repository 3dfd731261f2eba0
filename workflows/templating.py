"""Expressions in step configs, rendered with Jinja2's sandbox.

* A string that is exactly one ``{{ expression }}`` evaluates to the
  expression's value with its JSON type kept (a list stays a list).
* Any other string containing ``{{`` or ``{%`` renders as text.
* Dicts and lists are rendered element by element; other values pass through.

Names available: ``input`` (the whole trigger input), ``body``, ``query``,
``headers``, ``method`` and ``steps`` (earlier steps' outputs by key). A missing
name is an error naming the expression, never a silent empty string.
"""

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment


class _JsonEnvironment(SandboxedEnvironment):
    """``body.items`` means the request's ``items`` key, not dict.items: on a JSON
    object, a key wins over a Python attribute of the same name."""

    def getattr(self, obj, attribute):
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _JsonEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


class ExpressionError(Exception):
    """A template failed to compile or evaluate; the message names it."""


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _whole_expression(text: str) -> str | None:
    match = _WHOLE.match(text)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return match["expr"]
    return None


@lru_cache(maxsize=4096)
def _compile_expression(expr: str):
    return _ENV.compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _compile_template(text: str):
    return _ENV.from_string(text)


def render(value, context: Mapping):
    """Render every template inside ``value`` against ``context``."""
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, dict):
        return {
            (_render_string(k, context) if isinstance(k, str) else k): render(v, context)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def _render_string(text: str, context: Mapping):
    if not _is_template(text):
        return text
    try:
        expr = _whole_expression(text)
        if expr is not None:
            result = _compile_expression(expr)(**context)
            return _to_json(result, text)
        return _compile_template(text).render(**context)
    except ExpressionError:
        raise
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise ExpressionError(f"Expression {text!r} failed: {exc}") from exc


def _to_json(value, text: str):
    if isinstance(value, Undefined):
        raise ExpressionError(f"Expression {text!r} is undefined")
    if value is None or isinstance(value, bool | int | float | str):
        return value if type(value) in (bool, int, float, str, type(None)) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, text) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_to_json(v, text) for v in value]
    return str(value)


def check(value) -> list[str]:
    """Syntax errors of every template inside ``value`` (used when a workflow is saved)."""
    problems: list[str] = []
    if isinstance(value, str) and _is_template(value):
        try:
            expr = _whole_expression(value)
            if expr is not None:
                _compile_expression(expr)
            else:
                _compile_template(value)
        except TemplateError as exc:
            problems.append(f"{value!r}: {exc}")
    elif isinstance(value, dict):
        for k, v in value.items():
            problems += check(k) + check(v)
    elif isinstance(value, list):
        for v in value:
            problems += check(v)
    return problems
