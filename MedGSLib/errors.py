"""Typed errors of the MedGS engine.

Every problem a user can cause (bad file, bad option, no GPU) raises a subclass of
`MedGSError` with one sentence that names the problem and, where there is one, the fix.
The CLI turns these into one line on stderr and exit code 2; the Slicer worker turns them
into one JSON `error` event. Anything else is a bug and keeps its traceback.
"""


class MedGSError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(MedGSError, ValueError):
    """The input data cannot be used (wrong dimensionality, NaN, mismatched geometry...)."""


class OutputExistsError(MedGSError, FileExistsError):
    """An output file exists and overwriting was not allowed."""


class OutputError(MedGSError):
    """The outputs cannot be written (not a folder, read-only, no space left...)."""


class DeviceError(MedGSError, RuntimeError):
    """The requested compute device is not available (e.g. --device cuda without a GPU)."""


class OutOfMemoryError(MedGSError, MemoryError):
    """Training or rendering ran out of memory; the message names the knob to turn."""


class CancelledError(MedGSError):
    """The run was cancelled through the cancel flag."""
