"""How big a template's value may get, estimated *before* it is built.

workflows/templating.py renders step configs with Jinja2; a template is written
by an editor but fed by callers, so the size of what an operation builds must
be known before Python allocates it (a result checked afterwards has already
taken the memory). This module owns the estimates: ``text_size`` (an upper
bound on ``str(value)``, walking containers and stopping as soon as a bound is
passed, so a list holding one huge string a thousand times costs a few steps),
the sizes of %-formatting and ``str.format`` results (every field's width and
argument, summed), and the guards run before the string methods and filters
that can grow their input (``guard_method``, ``guard_filter``). Past a bound:
``LimitExceeded``.
"""

import json
import re
import string
from collections.abc import Collection, Mapping

from jinja2.utils import Namespace

# Characters of one string, items of one list, and characters written by one
# rendering (captured blocks included): above the http step's 5 MiB response (a
# template may pass one on), far below what hurts a worker.
MAX_TEXT = 10_000_000
# Bits of one integer (about 300,000 digits): products and powers are checked
# before they are computed (squaring again and again grows fast, and slowly).
MAX_INT_BITS = 1_000_000
# Lists made by one `slice` filter (each is an object of its own), as Jinja
# bounds range().
MAX_SLICES = 100_000
# Characters a number may take in any format (a float's %f is up to 309 digits).
_NUMBER = 340


class ExpressionError(Exception):
    """A template failed to compile or evaluate; the message names it."""


class LimitExceeded(ExpressionError):
    """A template went past a size or time bound (raised while it renders)."""


def sized_len(length: int) -> None:
    if length > MAX_TEXT:
        raise LimitExceeded(f"a value of more than {MAX_TEXT:,} characters or items")


def sized(value):
    """``value``, once built, within the bounds."""
    if isinstance(value, str | list | tuple | bytes) and len(value) > MAX_TEXT:
        sized_len(len(value))
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"a number of more than {MAX_INT_BITS:,} bits")
    return value


def seq_len(value) -> int:
    return len(value) if isinstance(value, str | list | tuple | bytes) else 0


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _repr_len(text: str) -> int:
    """An upper bound on len(repr(text)), cheap for ordinary text (newlines too)."""
    size = len(text) + text.count("\\") + text.count("'") + 2  # escaped: \\ and \'
    if text.isprintable():
        return size
    controls = sum(1 for _ in _CONTROL.finditer(text))  # \n is 2 characters, \x00 4
    if controls and _CONTROL.sub("", text).isprintable():
        return size + 3 * controls
    return 10 * len(text) + 2  # \U000e0001 at worst


def shape(value, budget: int = MAX_TEXT) -> tuple[int, int, int]:
    """(an upper bound on len(str(value)), its objects, its nesting depth), the
    walk stopping once the size passes ``budget`` (shared objects count each
    time they appear, as str() would write them)."""
    if isinstance(value, str):
        return len(value), 1, 0
    size = nodes = depth = 0
    stack: list[tuple] = [(iter((value,)), False)]
    while stack:
        items, nested = stack[-1]
        item = next(items, stack)
        if item is stack:
            stack.pop()
            continue
        nodes += 1
        if isinstance(item, str):
            size += _repr_len(item) if nested else len(item)
        elif item is None or isinstance(item, bool | float):
            size += 24
        elif isinstance(item, int):
            size += item.bit_length() // 3 + 2
        elif isinstance(item, bytes | bytearray):
            size += 4 * len(item) + 3
        elif isinstance(item, Namespace):
            size += 13
            stack.append((iter((object.__getattribute__(item, "_Namespace__attrs"),)), True))
        elif isinstance(item, Mapping):
            size += 2 + 4 * len(item)
            stack.append((_flat_items(item), True))
        elif isinstance(item, Collection) and not isinstance(item, range):
            size += 16 + 2 * len(item)
            stack.append((iter(item), True))
        else:
            size += len(str(item))  # a range, a generator, Jinja's loop: a short repr
        depth = max(depth, len(stack) - 1)
        if size > budget:
            break
    return size, nodes, depth


def _flat_items(mapping: Mapping):
    for key, item in mapping.items():
        yield key
        yield item


def text_size(value, budget: int = MAX_TEXT) -> int:
    return shape(value, budget)[0]


def _arg_size(arg, conversion: str) -> int:
    if isinstance(arg, int | float):
        return _NUMBER + (arg.bit_length() if isinstance(arg, int) else 0)
    if conversion in ("r", "a"):
        return text_size([arg]) - 16
    return text_size(arg)


_PERCENT = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0 +\-]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?[hlL]?"
    r"(?P<conv>[diouxXeEfFgGcrsa%])"
)


def percent_size(fmt: str, args) -> int:
    """An upper bound on the length of ``fmt % args``: the text, and for each
    field the larger of its width and its argument (plus its precision)."""
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    size, index = len(fmt), 0

    def take(spec: str | None) -> int:
        nonlocal index
        if spec == "*":
            value = positional[index] if index < len(positional) else 0
            index += 1
            return abs(value) if isinstance(value, int) else 0
        return int(spec) if spec else 0

    for field in _PERCENT.finditer(fmt):
        if field["conv"] == "%":
            continue
        width, precision = take(field["width"]), take(field["prec"])
        if field["key"] is not None and mapping is not None:
            arg = mapping.get(field["key"])
        else:
            arg = positional[index] if index < len(positional) else None
            index += 1
        size += max(width, _arg_size(arg, field["conv"]) + precision)
        sized_len(size)
    return size


_FORMATTER = string.Formatter()
_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<prec>\d+))?")


def format_size(fmt: str, args, kwargs) -> int:
    """An upper bound on the length of ``fmt.format(*args, **kwargs)``."""
    size, auto = 0, 0
    for literal, name, spec, conversion in _FORMATTER.parse(fmt):
        size += len(literal)
        if name is None:
            continue
        if "{" in (spec or ""):
            raise LimitExceeded(
                f"a format width or precision taken from the arguments (it may pass {MAX_TEXT:,})"
            )
        head = re.match(r"[^.\[]*", name).group()
        if head == "":
            head, auto = str(auto), auto + 1
        if head.isdigit():
            arg = args[int(head)] if int(head) < len(args) else None
        else:
            arg = kwargs.get(head)
        spec_match = _SPEC.match(spec or "")
        width = int(spec_match["width"] or 0)
        precision = int(spec_match["prec"] or 0)
        arg_size = _arg_size(arg, conversion or "s") + precision
        if head != name:  # {0.attr} or {0[key]}: part of the argument, or a short repr
            arg_size += 100
        size += max(width, arg_size * 4 // 3 + 1)  # thousands separators
        sized_len(size)
    return size


def _casing_size(text) -> int:
    return len(text) if text.isascii() else 3 * len(text)  # 'ﬃ'.upper() == 'FFI'


def guard_method(owner, name: str, args: tuple, kwargs: dict) -> tuple:
    """Before ``owner.name(*args, **kwargs)`` on a str or bytes: refuse what
    would build too much. The arguments to use (a generator given to join is
    read once, here)."""
    if name in ("center", "ljust", "rjust", "zfill"):
        no_big_ints([*args, *kwargs.values()])  # the result is the width, or the text
    elif name == "expandtabs":
        tabsize = (args or (kwargs.get("tabsize", 8),))[0]
        if isinstance(tabsize, int):
            tab = "\t" if isinstance(owner, str) else b"\t"
            sized_len(len(owner) + owner.count(tab) * max(tabsize - 1, 0))
    elif name == "replace":
        replace_size(owner, *args[:3])
    elif name == "join" and args:
        items = list(args[0])
        args = (items, *args[1:])
        sized_len(sum(map(seq_len, items)) + len(owner) * max(len(items) - 1, 0))
    elif name in ("format", "format_map") and isinstance(owner, str):
        if name == "format_map":
            format_size(owner, (), args[0] if args else {})
        else:
            format_size(owner, args, kwargs)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((seq_len(v) for v in args[0].values()), default=1)
        sized_len(len(owner) * max(longest, 1))
    elif name in ("upper", "lower", "title", "capitalize", "swapcase", "casefold"):
        sized_len(_casing_size(owner) if isinstance(owner, str) else len(owner))
    elif name == "encode" and isinstance(owner, str):
        sized_len(len(owner) if owner.isascii() else 10 * len(owner))
    return args


def no_big_ints(args) -> None:
    if any(isinstance(a, int) and abs(a) > MAX_TEXT for a in args):
        raise LimitExceeded(f"a width over {MAX_TEXT:,}")


def replace_size(text, old, new, count=-1) -> None:
    kinds = {type(text), type(old), type(new)}
    if kinds <= {str} or kinds <= {bytes}:
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        sized_len(len(text) + hits * (len(new) - len(old)))


def _escaped_size(value) -> int:
    if isinstance(value, str):
        return len(value) + 4 * sum(value.count(c) for c in "&<>\"'")  # &#34;
    return 5 * text_size(value)


def guard_filter(name: str, args: tuple, kwargs: dict) -> tuple:
    """Before the filter ``name`` runs (``args`` without Jinja's context
    argument): refuse what would build too much; the arguments to use."""
    value = args[0] if args else None
    params = [*args[1:], *kwargs.values()]
    if name in ("center", "batch", "truncate"):
        no_big_ints(params)
    elif name == "indent" and isinstance(value, str):
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        width = len(width) if isinstance(width, str) else width
        if isinstance(width, int):
            sized_len(len(value) + (value.count("\n") + 1) * abs(width))
    elif name == "wordwrap" and isinstance(value, str):
        width = args[1] if len(args) > 1 else kwargs.get("width", 79)
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
        if isinstance(width, int) and width > 0 and isinstance(wrap, str):
            lines = 2 * len(value) // width + value.count("\n") + 2
            sized_len(len(value) + lines * len(wrap))
    elif name == "format" and args:
        percent_size(str(value), kwargs or tuple(args[1:]))
    elif name == "replace" and len(args) >= 3:
        replace_size(str(value), *args[1:4])
    elif name == "join" and args:
        items = list(value)
        args = (items, *args[1:])
        joiner = args[1] if len(args) > 1 else kwargs.get("d", "")
        total = sum(text_size(item) for item in items)
        sized_len(total + len(str(joiner)) * max(len(items) - 1, 0))
    elif name == "sum" and args:
        items = list(value)
        args = (items, *args[1:])
        start = args[2] if len(args) > 2 else kwargs.get("start", 0)
        sized_len(seq_len(start) + sum(map(seq_len, items)))
    elif name == "slice" and len(args) > 1 and isinstance(args[1], int):
        if args[1] > MAX_SLICES:
            raise LimitExceeded(f"more than {MAX_SLICES:,} slices")
    elif name in ("string", "list"):
        sized_len(text_size(value) if name == "string" else seq_len(value))
    elif name in ("escape", "e", "forceescape", "xmlattr"):
        sized_len(_escaped_size(value) + (0 if name != "xmlattr" else 4 * len(value)))
    elif name == "urlencode":
        ascii_text = isinstance(value, str) and value.isascii()
        sized_len(text_size(value) * (3 if ascii_text else 12))
    elif name == "urlize" and isinstance(value, str):
        extra = sum(len(str(v)) for v in params if isinstance(v, str))
        sized_len(6 * len(value) + (len(value) // 4 + 1) * (100 + extra))
    elif name == "pprint":
        size, nodes, depth = shape(value)
        sized_len(size + nodes * (depth + 2))
    elif name in ("upper", "lower", "title", "capitalize") and isinstance(value, str):
        sized_len(_casing_size(value))
    return args


def bounded_dumps(value, **kwargs) -> str:
    """json.dumps for ``tojson``, written chunk by chunk within MAX_TEXT (Jinja
    then escapes < > & ' as six characters each: counted too)."""
    indent = kwargs.get("indent")
    indent_len = len(indent) if isinstance(indent, str) else indent or 0
    if indent_len:
        sized_len(indent_len * (shape(value)[2] + 2))  # one line at the deepest level
    chunks, size = [], 0
    for chunk in json.JSONEncoder(**kwargs).iterencode(value):
        size += len(chunk) + 5 * sum(chunk.count(c) for c in "<>&'")
        sized_len(size)
        chunks.append(chunk)
    return "".join(chunks)
