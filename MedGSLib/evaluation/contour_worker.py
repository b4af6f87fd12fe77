"""A child process that runs ITK's morphological contour interpolation for the contour baseline.

Why a process: after the contour filter has run, the process can abort with a glibc heap
error ("unaligned fastbin chunk detected"), reliably when SimpleITK is loaded in the same
process and on some inputs even without it, at interpreter exit (measured with ITK 5.4.x and
SimpleITK 2.5.x). An abort would take `medgs eval` (or Slicer) down with it, and the engine
needs SimpleITK for I/O and the B-spline baseline, so ITK gets a process of its own that
never loads SimpleITK and leaves with os._exit. It is also where ITK's ~10 s first import is
paid, once per evaluation, while the other methods run.

Protocol (one JSON object per line): the child prints {"ready": true} once ITK is loaded,
then reads {"in": job.npz, "out": result.npy} lines and answers {"ok": true} or
{"ok": false, "error": ..., "input_error": bool}. C++ output is sent to stderr so that it
cannot corrupt the protocol on stdout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError, MedGSError
from .errors import EvaluationError

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]   # the folder that holds MedGSLib/


class ContourWorker:
    """Parent side: start with `start()` (or as a context manager), call `interpolate`, `close()`."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._jobs = 0
        self.returncode: int | None = None    # the child's exit status once closed

    # -- lifecycle
    def start(self) -> "ContourWorker":
        """Start the child now; ITK loads in the background until `wait_ready`."""
        if self._proc is not None:
            return self
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
        self._tmp = tempfile.TemporaryDirectory(prefix="medgs-contour-")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "MedGSLib.evaluation.contour_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            text=True, env=env, cwd=self._tmp.name,
        )
        return self

    def wait_ready(self) -> None:
        """Block until ITK is loaded in the child (raises EvaluationError if it cannot be)."""
        self.start()
        if self._ready:
            return
        reply = self._read()
        if not reply.get("ready"):
            self.close()
            raise EvaluationError(f"the contour baseline cannot run: {reply.get('error', 'ITK did not load')}")
        self._ready = True

    def close(self) -> None:
        """Stop the child (it exits when its stdin closes) and remove the job files."""
        proc, self._proc, self._ready = self._proc, None, False
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
            self.returncode = proc.returncode
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "ContourWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- work
    def interpolate(self, kept: np.ndarray, k: int, spacing, values=None) -> np.ndarray:
        """Contour-interpolate the kept label slices in the child; same contract as `contour`."""
        self.wait_ready()
        self._jobs += 1
        folder = Path(self._tmp.name)
        job_in, job_out = folder / f"job{self._jobs}.npz", folder / f"job{self._jobs}.npy"
        arrays = dict(kept=np.ascontiguousarray(kept), k=np.int64(k),
                      spacing=np.asarray(spacing, dtype=np.float64))
        if values is not None:
            arrays["values"] = np.asarray(list(values), dtype=np.int64)
        np.savez(job_in, **arrays)
        try:
            self._proc.stdin.write(json.dumps({"in": str(job_in), "out": str(job_out)}) + "\n")
            self._proc.stdin.flush()
        except OSError as err:
            raise EvaluationError(f"the contour baseline's ITK process stopped: {err}") from err
        reply = self._read()
        try:
            if not reply.get("ok"):
                cls = InputError if reply.get("input_error") else EvaluationError
                raise cls(f"contour interpolation failed: {reply.get('error', 'no reason given')}")
            return np.load(job_out)
        finally:
            for f in (job_in, job_out):
                f.unlink(missing_ok=True)

    def _read(self) -> dict:
        line = self._proc.stdout.readline() if self._proc and self._proc.stdout else ""
        if not line:
            code = self._proc.poll() if self._proc else None
            raise EvaluationError(f"the contour baseline's ITK process ended unexpectedly (exit code {code})")
        try:
            return json.loads(line)
        except json.JSONDecodeError as err:
            raise EvaluationError(f"the contour baseline's ITK process sent an unreadable reply: {line[:200]!r}") from err


def _serve() -> int:
    """Child side: load ITK, then answer jobs until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)          # C++ and stray prints go to stderr, never into the protocol
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    try:
        import itk

        itk.MorphologicalContourInterpolator   # force ITK's lazy loader now, not in the first job
    except Exception as err:  # noqa: BLE001 - anything here means "cannot run", reported to the parent
        send({"ready": False, "error": f"ITK MorphologicalContourInterpolation is not available ({err}); "
                                       "pip install itk-morphologicalcontourinterpolation"})
        return 1
    send({"ready": True})

    from .baselines_labels import contour_in_this_process

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            with np.load(job["in"]) as z:
                values = z["values"].tolist() if "values" in z.files else None
                out = contour_in_this_process(z["kept"], int(z["k"]), tuple(z["spacing"].tolist()), values)
            np.save(job["out"], out)
            send({"ok": True})
        except MedGSError as err:
            send({"ok": False, "error": str(err), "input_error": True})
        except Exception as err:  # noqa: BLE001 - reported to the parent, which raises
            send({"ok": False, "error": f"{type(err).__name__}: {err}", "input_error": False})
    return 0


if __name__ == "__main__":
    status = _serve()
    sys.stderr.flush()
    # Leave without running exit-time destructors: the filter keeps ITK objects in C++
    # thread_local storage whose teardown at interpreter exit aborts with a glibc heap error
    # on some inputs (seen with ITK 5.4), after every result has already been written.
    os._exit(status)
