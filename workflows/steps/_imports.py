"""The standard-library modules a `code` step may import, and the import guard.

Used by _zygote.py (stdlib only). The zygote imports every allowed module once,
while it can still read the standard library (the workers' Python may live where
the sandbox's own uid cannot read, e.g. pyenv under /root); its children inherit
them. In a child, ``builtins.__import__`` is replaced by a guard: an import made
by the step's code (``import x``, ``from x import y``, ``__import__("x")``, for
top-level modules and submodules alike) succeeds only for a name in the list,
and anything else raises ``ModuleNotFoundError`` naming what is available.
Imports made inside the standard library itself go through unchanged.

The guard makes the rule clear and consistent; it is not the security boundary.
Python cannot confine Python: an allowed module's internals (``random._os``) or
introspection reach ``os`` and ``ctypes``. What confines a step is the operating
system: its own uid, no network, a private size-bounded tmp, rlimits
(_jail.py). The list leaves out what only makes sense as a way around those:
processes and the system (os, sys, subprocess, signal, resource, ctypes,
multiprocessing, threading), files and paths beyond ``open`` (pathlib, shutil,
tempfile, glob, zipfile), the import system and introspection (importlib,
inspect, gc, builtins, types, pickle, marshal), and the network (socket, ssl,
http, urllib.request), which a step with ``network: true`` may import.
"""

import builtins
import contextlib
import sys
from types import ModuleType

ALLOWED = (
    "abc", "array", "base64", "binascii", "bisect", "bz2", "calendar", "cmath", "codecs",
    "collections", "collections.abc", "colorsys", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "enum", "errno", "fractions", "functools", "graphlib", "gzip",
    "hashlib", "heapq", "hmac", "html", "html.entities", "html.parser", "io", "ipaddress",
    "itertools", "json", "keyword", "lzma", "math", "numbers", "operator", "pprint", "random",
    "re", "secrets", "statistics", "string", "struct", "textwrap", "time", "tomllib",
    "traceback", "typing", "unicodedata", "urllib", "urllib.parse", "uuid", "xml", "xml.etree",
    "xml.etree.ElementTree", "zlib", "zoneinfo",
)  # fmt: skip
# Only for steps with ``network: true`` (they run in the workers' network).
NETWORK = ("socket", "ssl", "http", "http.client", "urllib.error", "urllib.request")
# Imported by C code on behalf of the step's own call (datetime.strptime, str.encode):
# the frame that "imports" them is the step's.
_IMPLICIT = ("_strptime",)
_ENCODINGS = (
    "encodings.ascii", "encodings.latin_1", "encodings.utf_8", "encodings.utf_16",
    "encodings.utf_32", "encodings.cp1252", "encodings.iso8859_15", "encodings.idna",
    "encodings.punycode", "encodings.unicode_escape", "encodings.raw_unicode_escape",
    "encodings.base64_codec", "encodings.hex_codec",
)  # fmt: skip
# Importable only for their allowed submodules' sake (not listed as available).
_PARENTS = ("urllib", "xml", "xml.etree")
# The ``__name__`` of the namespace a step's code runs in (_zygote._execute).
STEP_MODULE = "step"


def preload() -> None:
    """Import every module a step may use (in the zygote, before any child)."""
    for name in ALLOWED + NETWORK + _IMPLICIT + _ENCODINGS:
        # A Python built without e.g. lzma: that import fails in steps too.
        with contextlib.suppress(ImportError):
            __import__(name)


def install(*, network: bool) -> None:
    """Guard the step's imports in this process (a sandbox child) from now on."""
    allowed = frozenset(ALLOWED + (NETWORK if network else ()) + _IMPLICIT)
    real_import = builtins.__import__
    available = ", ".join(name for name in ALLOWED if name not in _PARENTS)

    def refuse(name: str) -> ModuleNotFoundError:
        return ModuleNotFoundError(
            f"module {name!r} is not available in code steps; available: {available}"
            + ("" if network else " (and, with network: true, " + ", ".join(NETWORK) + ")"),
            name=name,
        )

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        if sys._getframe(1).f_globals.get("__name__") == STEP_MODULE:
            if level:
                raise ImportError("relative imports are not available in code steps")
            if name not in allowed:
                raise refuse(name)
            for item in fromlist or ():
                full = f"{name}.{item}"
                if item == "*" or full in allowed:
                    continue
                value = getattr(sys.modules.get(name), item, None)
                if value is None and full in sys.modules or isinstance(value, ModuleType):
                    raise refuse(full)
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded
