"""Errors of the evaluation package (all MedGSError subclasses, so the CLI prints one line)."""
from __future__ import annotations

from ..errors import MedGSError


class EvaluationError(MedGSError, RuntimeError):
    """A method or baseline could not be run or scored (the message names which and why)."""


class UnknownMethodError(MedGSError, ValueError):
    """A method name given to `medgs eval` is not one it knows."""


def need_module(module: str, pip_name: str, purpose: str):
    """Import a heavy optional module, or raise EvaluationError naming what needs it and the fix."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise EvaluationError(f"{purpose} needs {pip_name}, which is not installed here: pip install {pip_name}") from err
