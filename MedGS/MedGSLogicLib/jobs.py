"""One MedGS run from Slicer: export -> worker -> progress -> results as nodes -> clean-up.

`MedGSJob` never blocks: `start()` exports and launches, `poll()` (called by a GUI timer, or
in a loop by `wait()`) handles the worker's events and, when the process has ended, loads
the results or turns the failure into one clear message. The scene is changed only by a
fully successful run.
"""
from __future__ import annotations

import enum
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from MedGSLib.errors import InputError, MedGSError

from . import export, process, results, sparse
from .parameters import MedGSParameters

log = logging.getLogger(__name__)

# Exit codes of MedGSLib.worker (documented in MedGSLib/worker_protocol.md). Duplicated on
# purpose: importing MedGSLib.worker in Slicer's process would be harmless, but the protocol
# is the contract, not the module.
EXIT_OK, EXIT_ERROR, EXIT_BAD_JOB, EXIT_INTERNAL, EXIT_CANCELLED = 0, 1, 2, 3, 4

LOG_TAIL_LINES = 12


class JobState(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    IMPORTING = "importing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class Progress:
    stage: str = ""
    iteration: int = 0
    total: int = 0
    loss: float | None = None
    psnr: float | None = None
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.iteration / self.total) if self.total else 0.0

    def text(self) -> str:
        parts = [self.stage or "working"]
        if self.total:
            parts.append(f"{self.iteration}/{self.total}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.psnr is not None:
            parts.append(f"PSNR {self.psnr:.2f} dB")
        if self.eta_s is not None:
            parts.append(f"ETA {_duration(self.eta_s)}")
        return ", ".join(parts)


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"


def user_message(kind: str, message: str, log_path: str | None) -> str:
    """One clear sentence (or two) for the user, by error kind of the protocol."""
    where = f" The log is kept in {log_path}." if log_path else ""
    if kind == "cancelled":
        return "MedGS was cancelled; the scene is unchanged."
    if kind == "input":
        return f"MedGS cannot use this input: {message}"
    if kind == "device":
        return (f"{message} Choose device 'CPU' (small inputs only), or install a CUDA build of PyTorch "
                "through the PyTorch extension.")
    if kind == "out_of_memory":
        return (f"MedGS ran out of memory: {message} Try the 'fast' preset, a smaller factor, cropping the "
                "volume (Crop Volume module), or the other device." + where)
    if kind in ("job", "internal", "crash"):
        return f"MedGS failed: {message}{where}"
    return f"MedGS failed: {message}{where}"


class MedGSJob:
    """A run of the worker for one input. Use `MedGSLogic.startJob` / `process` to make one."""

    def __init__(self, scene, input_volume, labels_node, params: MedGSParameters, *,
                 runner: process.Runner | None = None, python: str | None = None,
                 job_root: Path | None = None, on_event: Callable[[dict], None] | None = None,
                 folder_name: str | None = None, segment_ids=None, add_to_scene: bool = True,
                 config_overrides: dict | None = None):
        self.scene = scene
        self.input_volume = input_volume
        self.labels_node = labels_node
        self.params = params
        self.runner = runner
        self.python = python
        self.job_root = Path(job_root) if job_root else Path(tempfile.gettempdir())
        self.on_event = on_event
        self.folder_name = folder_name
        self.segment_ids = list(segment_ids) if segment_ids else None  # of a segmentation: only these
        self.add_to_scene = add_to_scene  # False: results stay detached nodes (the Segment Editor effect)
        self.config_overrides = config_overrides  # job.json `config` (e.g. {"schedule": {...}})
        self.sparse_report: sparse.SparseReport | None = None
        self.annotated_slices: list[int] | None = None
        self.warnings: list[str] = []
        self.state = JobState.IDLE
        self.progress = Progress()
        self.log_lines: list[str] = []
        self.job_dir: Path | None = None
        self.exported: export.ExportedInputs | None = None
        self.worker: process.WorkerProcess | None = None
        self.final_event: dict | None = None
        self.error_kind: str | None = None
        self.error_message: str | None = None
        self.results: results.LoadedResults | None = None
        self.returncode: int | None = None
        self.kept_job_dir: Path | None = None
        self._cancel_requested = False
        self._started_at = 0.0
        self._signalled: list | None = None
        self._kill_after: float | None = None
        self._last_log: tuple | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "MedGSJob":
        """Validate, export and launch. Bad input raises InputError here; the scene is untouched."""
        if self.state is not JobState.IDLE:
            raise RuntimeError("a MedGSJob can be started once")
        self.params.validate()
        export.check_volume(self.input_volume)
        self.params.engine_options(has_labels=self.labels_node is not None)  # bad choices fail before any export
        self.job_root.mkdir(parents=True, exist_ok=True)
        self.job_dir = Path(tempfile.mkdtemp(prefix="MedGS-", dir=self.job_root))
        try:
            self.exported = export.export_inputs(self.scene, self.input_volume, self.labels_node, self.job_dir,
                                                 segment_ids=self.segment_ids)
            options = self.params.engine_options(has_labels=self.labels_node is not None,
                                                 annotated_slices=self._annotated_slices())
            extra = {"config": self.config_overrides} if self.config_overrides else None
            export.write_job(self.exported, options, iterations=self.params.iterations or None, extra=extra)
            self._started_at = time.monotonic()
            self.worker = process.start_worker(self.job_dir, self.runner, self.python)
        except BaseException:
            shutil.rmtree(self.job_dir, ignore_errors=True)  # nothing useful in it yet
            self.job_dir = None
            raise
        self.state = JobState.RUNNING
        self._emit({"event": "state", "state": self.state.value, "job_dir": str(self.job_dir)})
        for warning in self.warnings:
            self.log_lines.append(warning)
            self._emit({"event": "log", "level": "warning", "message": warning})
        return self

    def _annotated_slices(self) -> list[int] | None:
        """Painted slices of the exported labels (sparse mode), and the warnings about them."""
        self.warnings = list(self.exported.warnings)
        if self.exported.labels_array is None:
            return None
        axis = sparse.slice_axis(self.input_volume, self.params.axis)
        self.sparse_report = sparse.report(self.exported.labels_array, axis)
        if not self.params.sparse:
            if self.sparse_report.sparse:
                self.warnings.append(sparse.sparse_warning(self.sparse_report))
            return None
        if len(self.sparse_report.painted) < 2:
            raise InputError(f"the labels are painted on {len(self.sparse_report.painted)} slice(s) along "
                             f"{'IJK'[axis]}; filling between slices needs at least 2")
        self.annotated_slices = list(self.sparse_report.painted)
        return self.annotated_slices

    @property
    def running(self) -> bool:
        return self.state in (JobState.RUNNING, JobState.IMPORTING)

    @property
    def done(self) -> bool:
        return self.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

    def poll(self) -> bool:
        """Handle what the worker said since the last call; finish if it ended. True while running."""
        if self.state is not JobState.RUNNING or self.worker is None:
            return self.running
        for event in self.worker.events():
            self._handle(event)
        if self._kill_after is not None and time.monotonic() > self._kill_after and not self.worker.finished:
            self.worker.signal_tree(kill=True, procs=self._signalled)  # it ignored SIGTERM
            self._kill_after = None
        if self.worker.finished:
            self._finish()
        return self.running

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> bool:
        """Block until done (console/batch use). Returns False on timeout (the job keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                return False
            self.worker.wait(interval)
        return True

    def cancel(self, wait: bool = True) -> None:
        """Stop the worker's whole process tree; the scene stays as it was.

        wait=False (the GUI) only sends SIGTERM and returns; `poll()` kills what is still
        running after the grace period and finishes the job when the process is gone.
        """
        if self.state is not JobState.RUNNING or self.worker is None or self._cancel_requested:
            if wait and self._cancel_requested:
                self.wait()
            return
        self._cancel_requested = True
        self._emit({"event": "log", "level": "info", "message": "Cancelling..."})
        try:
            (self.job_dir / "cancel").touch()  # lets a worker that is between steps stop cleanly
        except OSError:
            pass
        if wait:
            self.worker.terminate_tree()
            self.worker.wait(5.0)
            self.poll()
            return
        self._signalled = self.worker.signal_tree(kill=False)
        self._kill_after = time.monotonic() + process.TERMINATE_GRACE_S

    # -- internals -------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken GUI callback must not break the run's bookkeeping
                log.exception("MedGS event callback failed")

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            p = self.progress
            p.stage = str(event.get("stage", p.stage))
            p.iteration = int(event.get("iteration", p.iteration) or 0)
            p.total = int(event.get("total", p.total) or 0)
            for key in ("loss", "psnr", "eta_s"):
                if key in event:
                    setattr(p, key, None if event[key] is None else float(event[key]))
        elif kind == "log":
            # The trainer's messages arrive twice (its logger is forwarded, and it also sends them
            # through the progress callback): the same line right after itself is shown once.
            if self._last_log == (event.get("level"), event.get("message")):
                return
            self._last_log = (event.get("level"), event.get("message"))
            self.log_lines.append(str(event.get("message", "")))
        elif kind in ("result", "error"):
            self.final_event = event
        self._emit(event)

    def _finish(self) -> None:
        self.returncode = self.worker.returncode
        final = self.final_event or {}
        if self._cancel_requested or final.get("kind") == "cancelled" or self.returncode == EXIT_CANCELLED:
            self._fail("cancelled", "cancelled", JobState.CANCELLED)
        elif final.get("event") == "result" and self.returncode == EXIT_OK:
            self.state = JobState.IMPORTING
            self._emit({"event": "state", "state": self.state.value})
            try:
                source = self.labels_node if self.labels_node is not None and self.labels_node.IsA(
                    "vtkMRMLSegmentationNode") else None
                loaded = results.read_results(final.get("outputs") or {}, self.job_dir / "output", self.input_volume,
                                              self.exported.labels,
                                              label_output_type=self.params.labelOutputType,
                                              source_segmentation=source)
                entries = results.label_entries(final.get("outputs") or {}, self.exported.labels)
                self.results = loaded if not self.add_to_scene else results.add_results_to_scene(
                    self.scene, loaded, self.input_volume, entries, self.folder_name)
            except (MedGSError, OSError, ValueError, TypeError, KeyError) as err:
                self._fail("internal", f"the results could not be loaded: {err}", JobState.FAILED)
                return
            self.state = JobState.COMPLETED
            self._cleanup(success=True)
            self._emit({"event": "state", "state": self.state.value,
                        "elapsed_s": round(time.monotonic() - self._started_at, 2)})
        elif final.get("event") == "error":
            self._fail(str(final.get("kind", "error")), str(final.get("message", "unknown error")), JobState.FAILED)
        else:
            tail = "; ".join(line for line in self.log_lines[-LOG_TAIL_LINES:] if line)
            self._fail("crash", f"the worker stopped unexpectedly (exit code {self.returncode})"
                       + (f"; last output: {tail}" if tail else ""), JobState.FAILED)

    def _fail(self, kind: str, message: str, state: JobState) -> None:
        self.state = state
        self.error_kind = kind
        self._cleanup(success=False)
        shown_log = str(self.kept_job_dir / "worker.log") if self.kept_job_dir else None
        self.error_message = user_message(kind, message, shown_log if state is JobState.FAILED else None)
        self._emit({"event": "state", "state": state.value, "message": self.error_message})

    def _cleanup(self, success: bool) -> None:
        """Remove the job folder, or keep it (whole, or just the log) as the parameters say."""
        if self.job_dir is None or not self.job_dir.exists():
            return
        if self.params.keepJobFolder:
            self.kept_job_dir = self.job_dir
            return
        if not success and self.state is JobState.FAILED and self.params.keepLogOnFailure:
            self._save_output_seen()
            for child in self.job_dir.iterdir():
                if child.name not in ("worker.log", "job.json"):
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            self.kept_job_dir = self.job_dir
            return
        shutil.rmtree(self.job_dir, ignore_errors=True)

    def _save_output_seen(self) -> None:
        """Add what the worker printed to its log: after a hard crash it is all there is."""
        try:
            with open(self.job_dir / "worker.log", "a", encoding="utf-8") as f:
                f.write(f"\n--- worker output received by Slicer (exit code {self.returncode}) ---\n")
                f.write("\n".join(self.log_lines) + "\n")
        except OSError:
            pass


def check_inputs(volume_node, labels_node, params: MedGSParameters) -> None:
    """The checks `start()` makes before exporting, for the GUI to call early."""
    params.validate()
    export.check_volume(volume_node)
    params.engine_options(has_labels=labels_node is not None)
    if labels_node is not None and not (labels_node.IsA("vtkMRMLSegmentationNode")
                                        or labels_node.IsA("vtkMRMLLabelMapVolumeNode")):
        raise InputError(f"'{labels_node.GetName()}' is neither a label map nor a segmentation")


def self_check_text(event: dict) -> str:
    """One line for the panel from a result event: the run's estimated gain over linear."""
    check = event.get("self_check") or {}
    if "gain_db" not in check:
        return ""
    from MedGSLib.selfcheck import CLASSICAL, summary
    text = summary(check)
    text = text[0].upper() + text[1:] + "."
    if check.get("choice") in CLASSICAL:
        name = CLASSICAL[check["choice"]]
        text += f" MedGS measured worse than {name} here, so {name} interpolation was delivered."
    elif check.get("measured_best") in CLASSICAL:
        name = CLASSICAL[check["measured_best"]]
        text += (f" {name} measured better on these slices, not significantly over the kept slices: "
                 f"MedGS was delivered (Python console: schedule.deliver='{check['measured_best']}' gives {name}).")
    labels, dice = check.get("label_choice"), check.get("label_dice") or {}
    if labels in LABEL_NAMES and labels != "model_1":
        text += f" Labels: {LABEL_NAMES[labels]} (measured better than the label heads alone)."
    if check.get("label_measured_best") == "linear" and labels != "linear":
        text += (f" Linear label interpolation measured Dice {dice['linear'] - dice[labels]:.3f} better on these "
                 "slices (Python console: schedule.deliver_labels='linear' gives it).")
    return text


# the panel's words for the self-check's label choices (selfcheck.LABEL_CANDIDATES)
LABEL_NAMES = {"model_1": "the label heads", "model_0.5": "the label heads averaged with MedGS's in-between labels",
               "blend": "MedGS's in-between labels", "linear": "linear label interpolation"}
