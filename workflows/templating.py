"""Expressions in step configs, rendered with Jinja2's sandbox.

* A string that is exactly one ``{{ expression }}`` evaluates to the
  expression's value with its JSON type kept (a list stays a list).
* Any other string containing ``{{`` or ``{%`` renders as text.
* Dicts and lists are rendered element by element; other values pass through.

Names available: ``input`` (the whole trigger input), ``body``, ``query``,
``headers``, ``method`` and ``steps`` (earlier steps' outputs by key). A missing
name is an error naming the expression, never a silent empty string.

Rendering is bounded (a template is written by an editor but fed by callers):
what an operation would build is estimated from its arguments and inputs
before it runs (workflows/template_bounds.py: repetition, concatenation and
``~``, padding, every %-format and ``str.format`` field summed, ``replace``,
``join``, ``expandtabs``, ``tojson``, ``wordwrap``, powers...), no string or
list may exceed MAX_TEXT, nor may everything one rendering writes (captured
``set`` blocks, macros and filter blocks included); mutating methods
(``list.append``) are refused and ``lipsum`` is gone. The step's deadline (its
timeout, else MAX_RENDER_SECONDS) is checked at every loop iteration, call,
attribute and item access and output. Past a bound, and when Python runs out
of memory or recursion anyway: ExpressionError, the step's ordinary error.
"""

import re
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from workflows import template_bounds as bounds
from workflows.template_bounds import (  # noqa: F401 (ExpressionError, MAX_TEXT: this module's API)
    MAX_INT_BITS,
    MAX_TEXT,
    ExpressionError,
    LimitExceeded,
    seq_len,
    sized,
    sized_len,
)

MAX_RENDER_SECONDS = 30.0  # when the step has no deadline of its own

_state = threading.local()  # .deadline: time.monotonic(); .written: characters output


def _tick() -> None:
    deadline = getattr(_state, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise LimitExceeded("rendering went past the step's time limit")


def _huge_power(base, exponent) -> bool:
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2:
        return False
    return exponent > 0 and abs(base).bit_length() * exponent > MAX_INT_BITS


def _huge_product(left, right) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
    return ints and left.bit_length() + right.bit_length() > MAX_INT_BITS


class _Bounds(NodeTransformer):
    """Every for loop iterates through ``environment.iol_iter`` (the deadline at
    each item), every ``~`` goes through ``environment.iol_concat`` (its size),
    and everything written, text or ``{{ value }}``, in the output or into a
    captured block, through ``environment.iol_out`` (counted before str())."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = _env_call("iol_iter", [node.iter])
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return _env_call("iol_concat", [nodes.List(node.nodes)])

    def visit_Output(self, node):
        node = self.generic_visit(node)
        node.nodes = [
            _env_call("iol_out", [nodes.Const(n.data) if isinstance(n, nodes.TemplateData) else n])
            for n in node.nodes
        ]
        return node


def _env_call(name: str, args: list):
    return nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None)


class _JsonEnvironment(ImmutableSandboxedEnvironment):
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
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes):
            args = bounds.guard_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return sized(SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))

    def wrap_str_format(self, value):
        """str.format and format_map come wrapped from getattr (Jinja sandboxes
        them at access): the size of what they write is estimated first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        owner, name = value.__self__, value.__name__

        def guarded(*args, **kwargs):
            bounds.guard_method(owner, name, args, kwargs)
            return wrapped(*args, **kwargs)

        return guarded

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "*":
            if _huge_product(left, right):
                raise LimitExceeded(f"a number of more than {MAX_INT_BITS:,} bits")
            for seq, times in ((left, right), (right, left)):
                if seq_len(seq) and isinstance(times, int):
                    sized_len(seq_len(seq) * times)
        elif operator == "+":
            sized_len(seq_len(left) + seq_len(right))
        elif operator == "**" and _huge_power(left, right):
            raise LimitExceeded(f"a number of more than {MAX_INT_BITS:,} bits")
        elif operator == "%" and isinstance(left, str | bytes):
            fmt = left if isinstance(left, str) else left.decode("latin-1")
            bounds.percent_size(fmt, right)
        return sized(super().call_binop(context, operator, left, right))

    def _generate(self, source, name, filename, defer_init=False):
        return super()._generate(_Bounds().visit(source), name, filename, defer_init)

    @staticmethod
    def iol_iter(iterable):
        for item in iterable:
            _tick()
            yield item

    @staticmethod
    def iol_concat(parts):
        sized_len(sum(bounds.text_size(p) for p in parts))
        return "".join(str(p) for p in parts)

    @staticmethod
    def iol_out(value):
        _tick()
        written = getattr(_state, "written", 0)
        written += bounds.text_size(value, MAX_TEXT - written)
        sized_len(written)
        _state.written = written
        return value


def _bounded_filter(name: str, real):
    context_args = 1 if getattr(real, "jinja_pass_arg", None) else 0

    def bounded(*args, **kwargs):
        _tick()
        passed, args = args[:context_args], args[context_args:]
        args = bounds.guard_filter(name, args, kwargs)
        return sized(real(*passed, *args, **kwargs))

    for attribute in ("jinja_pass_arg",):
        if hasattr(real, attribute):
            setattr(bounded, attribute, getattr(real, attribute))
    return bounded


_ENV = _JsonEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters = {name: _bounded_filter(name, f) for name, f in _ENV.filters.items()}
_ENV.globals.pop("lipsum")  # lipsum(n) writes n paragraphs: nothing a step needs
_ENV.policies["json.dumps_function"] = bounds.bounded_dumps  # tojson, chunk by chunk


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
    """Render every template inside ``value`` against ``context``: everything
    it writes, all strings together, within MAX_TEXT."""
    if getattr(_state, "written", None) is not None:
        return _render(value, context)
    _state.written = 0
    try:
        return _render(value, context)
    finally:
        _state.written = None


def _render(value, context: Mapping):
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, dict):
        return {
            (_render_string(k, context) if isinstance(k, str) else k): _render(v, context)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    return value


def _render_string(text: str, context: Mapping):
    if not _is_template(text):
        return text
    try:
        expr = _whole_expression(text)
        if expr is not None:
            result = _compile_expression(expr)(**context)
            _JsonEnvironment.iol_out(result)  # counted as if written (a DAG of lists too)
            return _to_json(result, text)
        return _bounded_output(_compile_template(text), context)
    except LimitExceeded as exc:
        raise ExpressionError(f"Expression {text[:200]!r} stopped: {exc}") from None
    except ExpressionError:
        raise
    except MemoryError:
        raise ExpressionError(f"Expression {text[:200]!r} stopped: out of memory") from None
    except RecursionError:
        raise ExpressionError(f"Expression {text[:200]!r} stopped: nested too deeply") from None
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise ExpressionError(f"Expression {text!r} failed: {exc}") from exc


def _bounded_output(template, context: Mapping) -> str:
    """The rendered text, checking the deadline at every chunk (its size is
    counted as it is written, by ``iol_out``)."""
    chunks = []
    for chunk in template.generate(**context):
        _tick()
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
        except RecursionError:  # ((((... thousands deep: the parser's own recursion
            problems.append(f"{value[:200]!r}: nested too deeply")
    elif isinstance(value, dict):
        for k, v in value.items():
            problems += check(k) + check(v)
    elif isinstance(value, list):
        for v in value:
            problems += check(v)
    return problems
