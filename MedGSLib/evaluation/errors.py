"""Errors of the evaluation package (all MedGSError subclasses, so the CLI prints one line)."""
from __future__ import annotations

from ..errors import MedGSError


class EvaluationError(MedGSError, RuntimeError):
    """A method or baseline could not be run or scored (the message names which and why)."""


class UnknownMethodError(MedGSError, ValueError):
    """A method name given to `medgs eval` is not one it knows."""
