"""Background worker: `python -m MedGSLib.worker JOB_DIR` (Slicer starts it with PythonSlicer).

It reads `JOB_DIR/job.json`, runs `MedGSLib.api.run_to_files` and speaks the line protocol of
`worker_protocol.md`: one JSON object per line on stdout (started, progress, log, and exactly
one final result or error), nothing else. Everything else the process prints, tracebacks
included, goes to `JOB_DIR/worker.log`, so a crash never floods the caller with a traceback.

Exit codes (also in worker_protocol.md): 0 success, 1 error the user can act on (bad input,
no GPU, out of memory), 2 unusable job folder or job.json, 3 internal error (a bug; see the
log), 4 cancelled (SIGTERM, SIGINT or a `cancel` file in the job folder).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

PROTOCOL_VERSION = 1

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_JOB = 2
EXIT_INTERNAL = 3
EXIT_CANCELLED = 4

JOB_FILE = "job.json"
LOG_FILE = "worker.log"
CANCEL_FILE = "cancel"
DEFAULT_OUTPUT_DIR = "output"

# After a cancel request the engine gets this long to stop at its next cancel check before
# the worker exits on its own; a long uninterruptible step must not make Cancel hang.
DEFAULT_CANCEL_GRACE_S = 15.0

# job.json's keys and the JSON types each takes (checked by read_job; wrong ones name the key).
_NUMBER = (int, float)
_JOB_KEYS = {"version": (int,), "input": (str,), "labels": (str, type(None)), "output_dir": (str, type(None)),
             "options": (dict, type(None)), "iterations": (int, type(None)), "config": (dict, type(None)),
             "cancel_grace_s": _NUMBER, "label_info": (dict, type(None)),
             "annotated_slices": (str, list, type(None))}
# options are keyword arguments of api.run_to_files
_OPTION_TYPES = {"factor": _NUMBER + (type(None),), "spacing": _NUMBER + (type(None),), "axis": (str, int),
                 "keep_every": (int,), "preset": (str,), "device": (str,), "seed": (int,), "outputs": (list,),
                 "mesh_format": (str,), "overwrite": (bool,), "probabilities": (bool,),
                 "max_output_gb": _NUMBER, "resume": (bool,), "checkpoint_every": (int,),
                 "checkpoint_minutes": _NUMBER, "annotated_slices": (str, list, type(None))}
_OPTION_KEYS = tuple(_OPTION_TYPES)
_OUTPUT_KINDS = ("volume", "labels", "meshes")
_MESH_FORMATS = ("vtk", "ply", "stl", "obj")

log = logging.getLogger("MedGSLib.worker")


class JobError(Exception):
    """job.json is missing, unreadable or asks for something impossible."""


class ProtocolWriter:
    """Writes one JSON object per line and flushes at once (the reader is waiting on it).

    A write that fails because the reader is gone calls `on_closed` once (the worker then
    cancels: nobody is left to use the result). A `log` event equal to the one just sent is
    dropped: the engine both logs a message and passes it to `progress`, and each must reach
    the caller once.
    """

    def __init__(self, stream: TextIO, on_closed=None):
        self._stream = stream
        self._lock = threading.Lock()
        self._on_closed = on_closed
        self._last_log: tuple[str, float] | None = None
        self.final_sent = False
        self.closed = False

    def send(self, event: dict) -> None:
        from .io import dumps_json

        line = dumps_json(event)
        with self._lock:
            if self.final_sent:
                return  # the final event is the last line, whatever happens after it
            if event.get("event") == "log":
                now = time.monotonic()
                key = str(event.get("message"))
                if self._last_log is not None and self._last_log[0] == key and now - self._last_log[1] < 2.0:
                    return
                self._last_log = (key, now)
            if event.get("event") in ("result", "error"):
                self.final_sent = True
            if self.closed:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.closed = True  # the reader is gone
        if self.closed and self._on_closed is not None:
            callback, self._on_closed = self._on_closed, None
            callback()


class CancelFlag:
    """Cancel requested by a signal or by a `cancel` file in the job folder."""

    def __init__(self, cancel_file: Path):
        self._event = threading.Event()
        self._cancel_file = cancel_file
        self._last_check = 0.0
        self.reason = ""

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()
            log.warning("cancel requested: %s", reason)   # worker.log: why the run stopped

    def __call__(self) -> bool:
        if self._event.is_set():
            return True
        now = time.monotonic()
        if now - self._last_check > 0.25:  # stat() at most 4x a second: it is called every step
            self._last_check = now
            if self._cancel_file.exists():
                self.request("cancel file")
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


def _type_name(types: tuple) -> str:
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "an object", type(None): "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _check_type(where: str, key: str, value: Any, types: tuple) -> None:
    # JSON true/false are Python bools, and bool is an int: never accept one for a number
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise JobError(f"{where}'{key}' must be {_type_name(types)}, got {json.dumps(value)}")


def _check_annotated(where: str, value: Any) -> None:
    if value is None or value == "auto":
        return
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                              for i in value):
        raise JobError(f"{where}'annotated_slices' must be \"auto\", a list of slice indices or null, "
                       f"got {json.dumps(value)}")


def _check_options(path: Path, options: dict) -> None:
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise JobError(f"unknown option(s) {unknown} in {path}; known: {list(_OPTION_KEYS)}")
    where = "option "
    for key, value in options.items():
        _check_type(where, key, value, _OPTION_TYPES[key])
    for key in ("factor", "spacing", "max_output_gb"):
        if options.get(key) is not None and not options[key] > 0:
            raise JobError(f"option '{key}' must be positive, got {options[key]}")
    for key, low in (("keep_every", 1), ("checkpoint_every", 0), ("checkpoint_minutes", 0)):
        if key in options and options[key] < low:
            raise JobError(f"option '{key}' must be at least {low}, got {options[key]}")
    if "axis" in options and options["axis"] not in ("auto", 0, 1, 2, "i", "j", "k"):
        raise JobError(f"option 'axis' must be \"auto\" or 0, 1, 2, got {json.dumps(options['axis'])}")
    if "outputs" in options:
        bad = [o for o in options["outputs"] if o not in _OUTPUT_KINDS]
        if bad or not options["outputs"]:
            raise JobError(f"option 'outputs' must list some of {list(_OUTPUT_KINDS)}, got {json.dumps(options['outputs'])}")
    if "mesh_format" in options and options["mesh_format"] not in _MESH_FORMATS:
        raise JobError(f"option 'mesh_format' must be one of {list(_MESH_FORMATS)}, got {json.dumps(options['mesh_format'])}")
    if "annotated_slices" in options:
        _check_annotated(where, options["annotated_slices"])


def read_job(job_dir: Path) -> dict:
    """Load and check job.json; relative paths in it are taken relative to the job folder.

    Strict: an unknown key or a value of the wrong JSON type is refused with the key named
    (a misspelt key must not be silently ignored, nor "no" read as true).
    """
    path = job_dir / JOB_FILE
    if not job_dir.is_dir():
        raise JobError(f"job folder {job_dir} does not exist")
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JobError(f"{path} cannot be read as JSON: {err}") from None
    if not isinstance(job, dict):
        raise JobError(f"{path} must hold a JSON object, not {type(job).__name__}")
    unknown = sorted(set(job) - set(_JOB_KEYS))
    if unknown:
        raise JobError(f"unknown key(s) {unknown} in {path}; known: {list(_JOB_KEYS)}")
    version = job.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise JobError(f"{path} has version {version!r}; this worker reads version {PROTOCOL_VERSION}")
    if not job.get("input"):
        raise JobError(f"{path} names no input volume (key 'input')")
    for key, value in job.items():
        _check_type("", key, value, _JOB_KEYS[key])
    iterations = job.get("iterations")
    if iterations is not None and iterations < 1:
        raise JobError(f"'iterations' in {path} must be a positive integer, got {iterations!r}")
    if job.get("cancel_grace_s", 0) < 0:
        raise JobError(f"'cancel_grace_s' in {path} must be 0 or positive, got {job['cancel_grace_s']}")
    _check_annotated("", job.get("annotated_slices"))
    options = job.get("options") or {}
    _check_options(path, options)
    if job.get("annotated_slices") is not None:
        options.setdefault("annotated_slices", job["annotated_slices"])

    def resolve(p: str | None) -> Path | None:
        if p is None:
            return None
        q = Path(p)
        return q if q.is_absolute() else job_dir / q

    job["input"] = resolve(job["input"])
    job["labels"] = resolve(job.get("labels"))
    job["output_dir"] = resolve(job.get("output_dir") or DEFAULT_OUTPUT_DIR)
    job["options"] = options
    return job


def build_config(job: dict):
    """TrainConfig through config.resolve_config: the preset (and its CPU variant), `iterations`,
    the seed, then job.json's `config` overrides ({section: {name: value}}, strict); a bad name
    or type is a JobError naming it."""
    from . import config as config_mod  # lazy: keeps `--help`-like failures cheap
    from .errors import InputError

    options = job["options"]
    try:
        return config_mod.resolve_config(options.get("preset", "fast"), options.get("device", "auto"),
                                         job.get("config"), source="job.json config",
                                         iterations=job.get("iterations"), seed=options.get("seed"))
    except InputError as err:
        raise JobError(f"config: {err}") from None


def _error_kind(err: BaseException) -> str:
    from . import errors

    for cls, kind in ((errors.CancelledError, "cancelled"), (errors.OutOfMemoryError, "out_of_memory"),
                      (errors.DeviceError, "device"), (errors.InputError, "input"),
                      (errors.OutputExistsError, "output_exists"), (errors.OutputError, "output"),
                      (errors.MedGSError, "error")):
        if isinstance(err, cls):
            return kind
    if isinstance(err, OSError) and err.errno in _USER_OS_ERRORS:
        return "output"   # a folder or disk problem the engine did not wrap: the user's, not a bug
    return "internal"


_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                   errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.EFBIG}


def _looks_like_oom(err: BaseException) -> bool:
    # torch raises its own OutOfMemoryError (a RuntimeError); the engine should wrap it, but a
    # raw one must still reach the user as "out of memory", not as a bug.
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, MemoryError) or "out of memory" in text


def run_job(job_dir: Path, writer: ProtocolWriter, cancel: CancelFlag, log_path: Path | None = None) -> int:
    """Run one job; sends the final event and returns the exit code. Never raises."""
    started = time.monotonic()
    log_path = log_path or job_dir / LOG_FILE
    try:
        job = read_job(job_dir)
        config = build_config(job)
    except JobError as err:
        writer.send({"event": "error", "kind": "job", "message": str(err), "log": str(log_path)})
        return EXIT_BAD_JOB

    def progress(event: dict) -> None:
        writer.send(dict(event))

    options = dict(job["options"])
    if "outputs" in options:
        options["outputs"] = tuple(options["outputs"])
    out_dir: Path = job["output_dir"]
    log.info("job %s: input %s, labels %s, options %s", job_dir, job["input"], job["labels"], options)
    try:
        if cancel():
            from .errors import CancelledError

            raise CancelledError("the run was cancelled before it started")
        from . import api  # lazy: torch is imported here, after `started` was already sent

        api.run_to_files(job["input"], out_dir, labels_path=job["labels"], config=config,
                         progress=progress, cancel=cancel, **options)
        run_json = out_dir / "run.json"
        try:
            summary = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RuntimeError(f"the engine finished but {run_json} cannot be read: {err}") from err
        writer.send({"event": "result", "outputs": summary.get("outputs", {}), "run_json": str(run_json),
                     "elapsed_s": round(time.monotonic() - started, 3),
                     # the run's own estimate of its gain over linear interpolation (selfcheck.py)
                     "self_check": (summary.get("result") or {}).get("self_check")})
        return EXIT_OK
    except BaseException as err:  # noqa: BLE001 - every failure must end in one error event
        traceback.print_exc()  # to worker.log: stderr was redirected there
        kind = _error_kind(err)
        if kind == "internal" and _looks_like_oom(err):
            kind = "out_of_memory"
        if kind == "internal" and cancel() and isinstance(err, KeyboardInterrupt):
            kind = "cancelled"
        if kind == "cancelled":
            message = f"cancelled ({cancel.reason or 'by request'})"
            code = EXIT_CANCELLED
        elif kind == "internal":
            message = f"internal error {type(err).__name__}: {err}"  # the traceback is in the log
            code = EXIT_INTERNAL
        else:
            message = str(err)
            code = EXIT_ERROR
        writer.send({"event": "error", "kind": kind, "message": message, "log": str(log_path)})
        return code


def _open_log(job_dir: Path) -> tuple[int, Path]:
    """The log file's descriptor: JOB_DIR/worker.log, or a temporary file where the job folder
    cannot be written (a read-only job folder must still get its one protocol error line)."""
    path = job_dir / LOG_FILE
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), path
    except OSError:
        import tempfile

        fd, name = tempfile.mkstemp(prefix=f"medgs-worker-{os.getpid()}-", suffix=".log")
        return fd, Path(name)


def _redirect_std_streams(log_fd: int) -> TextIO:
    """Point fds 1 and 2 at the log file; return a stream on the original stdout.

    Done at the file-descriptor level so that prints from C extensions and from libraries
    that hold their own reference to sys.stdout land in the log, not in the protocol.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    protocol_fd = os.dup(1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


def _watch_caller(cancel: CancelFlag, parent: int, every_s: float = 0.5) -> None:
    """Cancel when the process that started us is gone (we are re-parented, e.g. to PID 1):
    Slicer killed with SIGKILL cannot send SIGTERM, and a worker training for nobody wastes
    the GPU for hours."""
    while not cancel.wait(every_s):
        if os.getppid() != parent:
            cancel.request("the calling process is gone")
            return


class _ForwardLogs(logging.Handler):
    """Engine log records at INFO and above become `log` events."""

    def __init__(self, writer: ProtocolWriter):
        super().__init__(logging.INFO)
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == log.name:
            return  # the worker's own bookkeeping is for worker.log only
        try:
            self._writer.send({"event": "log", "level": record.levelname.lower(), "message": record.getMessage()})
        except Exception:  # a log line must never break the run
            pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        sys.stderr.write("usage: python -m MedGSLib.worker JOB_DIR\n"
                         "Runs JOB_DIR/job.json; protocol: MedGSLib/worker_protocol.md\n")
        return EXIT_OK if argv in (["-h"], ["--help"]) else EXIT_BAD_JOB
    job_dir = Path(argv[0]).resolve()
    if not job_dir.is_dir():
        # No job folder means no log file either: one protocol line is all we can give.
        print(json.dumps({"event": "error", "kind": "job", "message": f"job folder {job_dir} does not exist"}),
              flush=True)
        return EXIT_BAD_JOB

    log_fd, log_path = _open_log(job_dir)
    stream = _redirect_std_streams(log_fd)
    cancel = CancelFlag(job_dir / CANCEL_FILE)
    writer = ProtocolWriter(stream, on_closed=lambda: cancel.request("the caller closed the output pipe"))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("MedGSLib").addHandler(_ForwardLogs(writer))
    logging.getLogger("MedGSLib").propagate = True

    grace = DEFAULT_CANCEL_GRACE_S
    try:
        value = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8")).get("cancel_grace_s", grace)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            grace = float(value)
    except Exception:
        pass  # read_job reports a bad job.json properly

    def on_signal(signum: int, _frame: Any) -> None:
        cancel.request(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def watchdog() -> None:
        cancel.wait()
        time.sleep(grace)
        # Still here: the engine did not reach a cancel check in time. Report and leave.
        writer.send({"event": "error", "kind": "cancelled",
                     "message": f"cancelled ({cancel.reason}); stopped without waiting for the current step",
                     "log": str(log_path)})
        with contextlib.suppress(Exception):
            stream.flush()
        os._exit(EXIT_CANCELLED)

    threading.Thread(target=watchdog, name="medgs-cancel-watchdog", daemon=True).start()
    threading.Thread(target=_watch_caller, args=(cancel, os.getppid()), name="medgs-caller-watch",
                     daemon=True).start()
    writer.send({"event": "started", "protocol": PROTOCOL_VERSION, "pid": os.getpid(), "job": str(job_dir)})
    code = run_job(job_dir, writer, cancel, log_path)
    with contextlib.suppress(Exception):
        stream.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
