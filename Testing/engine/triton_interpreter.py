"""Triton's CPU interpreter for the tests of Triton kernels: import this before anything imports triton.

Triton decides interpreter-or-compiler when its own helpers (tl.cumsum...) are decorated, i.e. at
`import triton`: the switch must be set before that import, and a test that comes too late says so.
"""
import os
import sys

import pytest

_LATE = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
os.environ["TRITON_INTERPRET"] = "1"


def needs_triton(what: str):
    """A skip mark for tests of `what` where the interpreter cannot run them (with the reason)."""
    try:
        import triton  # noqa: F401
        why = "triton was imported before TRITON_INTERPRET=1 was set" if _LATE else ""
    except ImportError:
        why = f"triton is not installed (pip install triton; Linux x86-64 only): {what} not tested"
    return pytest.mark.skipif(bool(why), reason=why)
