"""Expressions in step configs, rendered with Jinja2's sandbox.

* A string that is exactly one ``{{ expression }}`` evaluates to the
  expression's value with its JSON type kept (a list stays a list).
* Any other string containing ``{{`` or ``{%`` renders as text.
* Dicts and lists are rendered element by element; other values pass through.

Names available: ``input`` (the whole trigger input), ``body``, ``query``,
``headers``, ``method`` and ``steps`` (earlier steps' outputs by key). A missing
name is an error naming the expression, never a silent empty string.

Rendering is bounded (a template is written by an editor but fed by callers):
no string or list it builds may exceed MAX_TEXT (repetition, concatenation,
``~``, padding and format widths, ``replace``, powers are checked before they
allocate), the rendered text neither, and the step's deadline (its timeout,
else MAX_RENDER_SECONDS) is checked at every loop iteration, call, attribute
and item access and output chunk. Past a bound: ExpressionError, a step error.
"""

import re
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

# Characters of one string, items of one list: above the http step's 5 MiB
# response (a template may pass one on), far below what hurts a worker.
MAX_TEXT = 10_000_000
# Bits of one integer (about 300,000 digits): products and powers are checked
# before they are computed (squaring again and again grows fast, and slowly).
MAX_INT_BITS = 1_000_000
MAX_RENDER_SECONDS = 30.0  # when the step has no deadline of its own
# A %-format or str.format width/precision of 10,000,000 or more, or one taken from
# the arguments (``%*d``, ``{:{}}``).
_BIG_WIDTH = re.compile(
    r"%(?:\([^)]*\))?[#0 +\-]*(?:\*|\d{8,}|\d*\.(?:\*|\d{8,}))"
    r"|\{[^{}]*:[^{}]*(?:\d{8,}|\{)"
)


class ExpressionError(Exception):
    """A template failed to compile or evaluate; the message names it."""


class LimitExceeded(ExpressionError):
    """A template went past a size or time bound (raised while it renders)."""


_state = threading.local()  # .deadline: time.monotonic() by which rendering must end


def _tick() -> None:
    deadline = getattr(_state, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise LimitExceeded("rendering went past the step's time limit")


def _sized(value):
    if isinstance(value, str | list | tuple | bytes) and len(value) > MAX_TEXT:
        raise LimitExceeded(f"a value of more than {MAX_TEXT:,} characters or items")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"a number of more than {MAX_INT_BITS:,} bits")
    return value


def _no_big_width(fmt) -> None:
    if isinstance(fmt, str) and _BIG_WIDTH.search(fmt):
        raise LimitExceeded(f"a format width or precision over {MAX_TEXT:,} (or *)")


def _no_big_ints(args) -> None:
    if any(isinstance(a, int) and abs(a) > MAX_TEXT for a in args):
        raise LimitExceeded(f"a width over {MAX_TEXT:,}")


def _replace_size(text, old, new, count=-1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _sized_len(len(text) + hits * (len(new) - len(old)))


def _sized_len(length: int) -> None:
    if length > MAX_TEXT:
        raise LimitExceeded(f"a value of more than {MAX_TEXT:,} characters or items")


def _huge_power(base, exponent) -> bool:
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2:
        return False
    return exponent > 0 and abs(base).bit_length() * exponent > MAX_INT_BITS


def _huge_product(left, right) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
    return ints and left.bit_length() + right.bit_length() > MAX_INT_BITS


def _len(value) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


class _Bounds(NodeTransformer):
    """Every for loop iterates through ``environment.iol_iter`` (the deadline at
    each item), every ``~`` goes through ``environment.iol_concat`` (its size)."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = _env_call("iol_iter", [node.iter])
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return _env_call("iol_concat", [nodes.List(node.nodes)])


def _env_call(name: str, args: list):
    return nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None)


_PADDING = {"center", "ljust", "rjust", "zfill", "expandtabs"}


class _JsonEnvironment(SandboxedEnvironment):
    """``body.items`` means the request's ``items`` key, not dict.items: on a JSON
    object, a key wins over a Python attribute of the same name. And bounded
    (see the module's docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj, attribute):
        _tick()
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        _tick()
        owner, name = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _PADDING:
                _no_big_ints(args)
            elif name == "replace":
                _replace_size(owner, *args[:3])
        return _sized(SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))

    def wrap_str_format(self, value):
        _no_big_width(getattr(value, "__self__", None))
        return super().wrap_str_format(value)

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "*":
            if _huge_product(left, right):
                raise LimitExceeded(f"a number of more than {MAX_INT_BITS:,} bits")
            for seq, times in ((left, right), (right, left)):
                if _len(seq) and isinstance(times, int):
                    _sized_len(_len(seq) * times)
        elif operator == "+":
            _sized_len(_len(left) + _len(right))
        elif operator == "**" and _huge_power(left, right):
            raise LimitExceeded(f"a number of more than {MAX_INT_BITS:,} bits")
        elif operator == "%" and isinstance(left, str):
            _no_big_width(left)
        return _sized(super().call_binop(context, operator, left, right))

    def _generate(self, source, name, filename, defer_init=False):
        return super()._generate(_Bounds().visit(source), name, filename, defer_init)

    @staticmethod
    def iol_iter(iterable):
        for item in iterable:
            _tick()
            yield item

    @staticmethod
    def iol_concat(parts):
        _sized_len(sum(len(p) if isinstance(p, str) else len(str(p)) for p in parts))
        return "".join(str(p) for p in parts)


def _bounded_filter(name: str, real):
    def bounded(*args, **kwargs):
        _tick()
        if name in ("center", "indent", "wordwrap"):
            _no_big_ints([*args[1:], *kwargs.values()])
        if name == "indent" and args and isinstance(args[0], str):
            width = args[1] if len(args) > 1 else kwargs.get("width", 4)
            width = len(width) if isinstance(width, str) else width
            if isinstance(width, int):
                _sized_len(len(args[0]) + (args[0].count("\n") + 1) * width)
        if name == "format" and args:
            _no_big_width(args[0])
        if name == "replace" and len(args) >= 3:
            _replace_size(str(args[1]), args[2], args[3], *args[4:5])
        return _sized(real(*args, **kwargs))

    for attribute in ("jinja_pass_arg",):
        if hasattr(real, attribute):
            setattr(bounded, attribute, getattr(real, attribute))
    return bounded


_ENV = _JsonEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters = {name: _bounded_filter(name, f) for name, f in _ENV.filters.items()}


@contextmanager
def deadline(at: float | None):
    """Bound the rendering inside to ``at`` (time.monotonic()), or to
    MAX_RENDER_SECONDS from now when None."""
    previous = getattr(_state, "deadline", None)
    limit = at if at is not None else time.monotonic() + MAX_RENDER_SECONDS
    if previous is not None:
        limit = min(limit, previous)
    _state.deadline = limit
    try:
        yield
    finally:
        _state.deadline = previous


_WHOLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


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
        return _bounded_output(_compile_template(text), context)
    except LimitExceeded as exc:
        raise ExpressionError(f"Expression {text[:200]!r} stopped: {exc}") from None
    except ExpressionError:
        raise
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise ExpressionError(f"Expression {text!r} failed: {exc}") from exc


def _bounded_output(template, context: Mapping) -> str:
    """The rendered text, checking its size and the deadline at every chunk."""
    chunks, size = [], 0
    for chunk in template.generate(**context):
        _tick()
        size += len(chunk)
        _sized_len(size)
        chunks.append(chunk)
    return "".join(chunks)


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
