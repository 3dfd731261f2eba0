"""Code a test prepends to a code step to reach the operating system around the
import guard, so tests prove the sandbox's isolation, not the guard."""

# Prepended to a code step's code: reaches `os` and `sys` around the import guard
# (which is not the security boundary, see workflows/steps/_imports.py), so tests
# prove the operating system's isolation holds against code that has them.
SANDBOX_ESCAPE = (
    "_g = next(c for c in ().__class__.__base__.__subclasses__()"
    " if c.__name__ == '_wrap_close').__init__.__globals__\n"
    "os, sys = _g['sys'].modules['os'], _g['sys']\n"
)
