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

import json
import logging
import math
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

_OPTION_KEYS = ("factor", "spacing", "axis", "keep_every", "preset", "device", "seed",
                "outputs", "mesh_format", "overwrite", "annotated_slices")

log = logging.getLogger("MedGSLib.worker")


class JobError(Exception):
    """job.json is missing, unreadable or asks for something impossible."""


def _json_safe(value: Any) -> Any:
    """Numbers, arrays and paths -> plain JSON; NaN/inf -> None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch scalars
        return _json_safe(value.tolist())
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return str(value)


class ProtocolWriter:
    """Writes one JSON object per line and flushes at once (the reader is waiting on it)."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._lock = threading.Lock()
        self.final_sent = False

    def send(self, event: dict) -> None:
        line = json.dumps(_json_safe(event), allow_nan=False, separators=(",", ":"))
        with self._lock:
            if self.final_sent:
                return  # the final event is the last line, whatever happens after it
            if event.get("event") in ("result", "error"):
                self.final_sent = True
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the reader is gone; nothing useful to do with the event


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


def read_job(job_dir: Path) -> dict:
    """Load and check job.json; relative paths in it are taken relative to the job folder."""
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
    version = job.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise JobError(f"{path} has version {version!r}; this worker reads version {PROTOCOL_VERSION}")
    if not job.get("input"):
        raise JobError(f"{path} names no input volume (key 'input')")

    def resolve(p: str | None) -> Path | None:
        if p is None:
            return None
        q = Path(p)
        return q if q.is_absolute() else job_dir / q

    job["input"] = resolve(job["input"])
    job["labels"] = resolve(job.get("labels"))
    job["output_dir"] = resolve(job.get("output_dir") or DEFAULT_OUTPUT_DIR)
    options = job.get("options") or {}
    if not isinstance(options, dict):
        raise JobError(f"'options' in {path} must be an object")
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise JobError(f"unknown option(s) {unknown} in {path}; known: {list(_OPTION_KEYS)}")
    ann = options.get("annotated_slices")
    # "auto", a list of slice indices, or null; with it, factor 1 (same slices, labels filled) is valid
    if ann is not None and ann != "auto" and not (
            isinstance(ann, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ann)):
        raise JobError(f"'annotated_slices' in {path} must be \"auto\", a list of slice indices or null, got {ann!r}")
    iterations = job.get("iterations")
    if iterations is not None and (not isinstance(iterations, int) or iterations < 1):
        raise JobError(f"'iterations' in {path} must be a positive integer, got {iterations!r}")
    job["options"] = options
    return job


def build_config(job: dict):
    """TrainConfig from the preset, then job.json's `config` overrides and `iterations`.

    Returns None when the job asks for nothing beyond the preset, so the engine picks its own.
    """
    overrides = job.get("config")
    iterations = job.get("iterations")
    if not overrides and iterations is None:
        return None
    from . import config as config_mod  # lazy: keeps `--help`-like failures cheap

    options = job["options"]
    cfg = config_mod.preset(options.get("preset", "fast"))
    if overrides:
        merged = cfg.to_dict()
        for section, values in overrides.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section].update(values)
            else:
                merged[section] = values
        cfg = config_mod.TrainConfig.from_dict(merged)
    if iterations is not None:
        cfg.schedule.iterations = int(iterations)
    if "device" in options:
        cfg.device = options["device"]
    if "seed" in options:
        cfg.seed = int(options["seed"])
    return cfg


def _error_kind(err: BaseException) -> str:
    from . import errors

    for cls, kind in ((errors.CancelledError, "cancelled"), (errors.OutOfMemoryError, "out_of_memory"),
                      (errors.DeviceError, "device"), (errors.InputError, "input"),
                      (errors.OutputExistsError, "output_exists"), (errors.MedGSError, "error")):
        if isinstance(err, cls):
            return kind
    return "internal"


def _looks_like_oom(err: BaseException) -> bool:
    # torch raises its own OutOfMemoryError (a RuntimeError); the engine should wrap it, but a
    # raw one must still reach the user as "out of memory", not as a bug.
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, MemoryError) or "out of memory" in text


def run_job(job_dir: Path, writer: ProtocolWriter, cancel: CancelFlag) -> int:
    """Run one job; sends the final event and returns the exit code. Never raises."""
    started = time.monotonic()
    try:
        job = read_job(job_dir)
        config = build_config(job)
    except JobError as err:
        writer.send({"event": "error", "kind": "job", "message": str(err), "log": str(job_dir / LOG_FILE)})
        return EXIT_BAD_JOB
    except Exception as err:  # a bad `config` section: the job is at fault, not the engine
        traceback.print_exc()
        writer.send({"event": "error", "kind": "job", "message": f"job.json options are invalid: {err}",
                     "log": str(job_dir / LOG_FILE)})
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
                     "elapsed_s": round(time.monotonic() - started, 3)})
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
        writer.send({"event": "error", "kind": kind, "message": message, "log": str(job_dir / LOG_FILE)})
        return code


def _redirect_std_streams(log_path: Path) -> TextIO:
    """Point fds 1 and 2 at the log file; return a stream on the original stdout.

    Done at the file-descriptor level so that prints from C extensions and from libraries
    that hold their own reference to sys.stdout land in the log, not in the protocol.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    protocol_fd = os.dup(1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


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

    stream = _redirect_std_streams(job_dir / LOG_FILE)
    writer = ProtocolWriter(stream)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("MedGSLib").addHandler(_ForwardLogs(writer))
    logging.getLogger("MedGSLib").propagate = True

    cancel = CancelFlag(job_dir / CANCEL_FILE)
    grace = DEFAULT_CANCEL_GRACE_S
    try:
        grace = float(json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8")).get("cancel_grace_s", grace))
    except Exception:
        pass  # read_job reports a bad job.json properly

    def on_signal(signum: int, _frame: Any) -> None:
        cancel.request(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def watchdog() -> None:
        cancel.wait()
        time.sleep(grace)
        # Still here: the engine did not reach a cancel check in time. Report and leave.
        writer.send({"event": "error", "kind": "cancelled",
                     "message": f"cancelled ({cancel.reason}); stopped without waiting for the current step",
                     "log": str(job_dir / LOG_FILE)})
        stream.flush()
        os._exit(EXIT_CANCELLED)

    threading.Thread(target=watchdog, name="medgs-cancel-watchdog", daemon=True).start()
    writer.send({"event": "started", "protocol": PROTOCOL_VERSION, "pid": os.getpid(), "job": str(job_dir)})
    code = run_job(job_dir, writer, cancel)
    stream.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
