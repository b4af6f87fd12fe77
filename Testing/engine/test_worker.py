"""The worker protocol on its own: job.json in, JSON lines out, exit codes, logs, cancel.

The worker runs as a real subprocess. Where a test needs the engine to behave in a given way
(succeed, fail, hang) the subprocess installs a small `MedGSLib.api` of its own before
calling `MedGSLib.worker.main`, so these tests depend only on the worker itself.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from MedGSLib import worker

REPO = Path(__file__).resolve().parents[2]

BOOT = """
import json, sys, time, types
import numpy as np
import MedGSLib
from MedGSLib import errors
api = types.ModuleType("MedGSLib.api")
{body}
api.run_to_files = run_to_files
sys.modules["MedGSLib.api"] = api
MedGSLib.api = api
from MedGSLib.worker import main
sys.exit(main([sys.argv[1]]))
"""

ENGINES = {
    "ok": """
def run_to_files(input_path, out_dir, **kw):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "volume.nrrd").write_text("x")
    (out_dir / "kwargs.json").write_text(json.dumps({k: repr(v) for k, v in kw.items()} | {
        "input_path": str(input_path), "iterations": getattr(getattr(kw["config"], "schedule", None), "iterations", None)}))
    print("a stray print from the engine")            # must land in worker.log, not in the protocol
    sys.stderr.write("a warning on stderr\\n")
    kw["progress"]({"event": "progress", "stage": "train", "iteration": np.int64(1), "total": 2,
                    "loss": np.float32(0.25), "psnr": float("nan"), "eta_s": 1.5})
    import logging; logging.getLogger("MedGSLib.api").info("rendering %d frames", 23)
    (out_dir / "run.json").write_text(json.dumps({"outputs": {"volume": str(out_dir / "volume.nrrd")}}))
""",
    "input_error": """
def run_to_files(input_path, out_dir, **kw):
    raise errors.InputError("volume is 2D (20 x 20 x 1)")
""",
    "bug": """
def run_to_files(input_path, out_dir, **kw):
    return 1 / 0
""",
    "torch_oom": """
def run_to_files(input_path, out_dir, **kw):
    raise RuntimeError("CUDA out of memory. Tried to allocate 7.38 GiB")
""",
    "no_run_json": """
def run_to_files(input_path, out_dir, **kw):
    out_dir.mkdir(parents=True, exist_ok=True)
""",
    "slow": """
def run_to_files(input_path, out_dir, **kw):
    for i in range(100000):
        if kw["cancel"]():
            raise errors.CancelledError("cancelled at iteration %d" % i)
        kw["progress"]({"event": "progress", "stage": "train", "iteration": i, "total": 100000})
        time.sleep(0.01)
""",
    "stuck": """
def run_to_files(input_path, out_dir, **kw):
    kw["progress"]({"event": "progress", "stage": "train", "iteration": 0, "total": 1})
    time.sleep(600)                                     # never looks at cancel()
""",
}


def make_job(tmp_path: Path, **extra) -> Path:
    job_dir = tmp_path / "job"
    (job_dir / "input").mkdir(parents=True)
    (job_dir / "input" / "volume.nrrd").write_text("not read by the fake engines")
    job = {"version": 1, "input": "input/volume.nrrd", "labels": None, "output_dir": "output",
           "options": {"factor": 2.0, "preset": "fast", "device": "cpu", "outputs": ["volume"]}}
    job.update(extra)
    (job_dir / "job.json").write_text(json.dumps(job))
    return job_dir


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def start(engine: str, job_dir: Path) -> subprocess.Popen:
    code = BOOT.format(body=textwrap.dedent(ENGINES[engine]))
    return subprocess.Popen([sys.executable, "-c", code, str(job_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env())


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, list[dict], str]:
    out, err = proc.communicate(timeout=timeout)
    events = [json.loads(line) for line in out.splitlines()]  # every stdout line must be JSON
    return proc.returncode, events, err


def read_lines_until(proc: subprocess.Popen, predicate, timeout: float = 30) -> list[dict]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))
        if predicate(seen[-1]):
            return seen
    raise AssertionError(f"condition not met; saw {seen}")


def test_success_protocol_and_log(tmp_path):
    job_dir = make_job(tmp_path, iterations=7)
    code, events, err = finish(start("ok", job_dir))
    assert code == worker.EXIT_OK == 0
    assert err == ""  # stderr went to the log too
    assert [e["event"] for e in events] == ["started", "progress", "log", "result"]
    assert events[0]["protocol"] == 1 and events[0]["job"] == str(job_dir)
    assert events[1] == {"event": "progress", "stage": "train", "iteration": 1, "total": 2, "loss": 0.25,
                         "psnr": None, "eta_s": 1.5}  # numpy numbers -> JSON, NaN -> null
    assert events[2] == {"event": "log", "level": "info", "message": "rendering 23 frames"}
    assert events[3]["outputs"] == {"volume": str(job_dir / "output" / "volume.nrrd")}
    assert events[3]["run_json"] == str(job_dir / "output" / "run.json")
    log = (job_dir / "worker.log").read_text()
    assert "a stray print from the engine" in log and "a warning on stderr" in log
    kwargs = json.loads((job_dir / "output" / "kwargs.json").read_text())
    assert kwargs["input_path"] == str(job_dir / "input" / "volume.nrrd")  # relative to the job folder
    assert kwargs["labels_path"] == "None" and kwargs["factor"] == "2.0" and kwargs["outputs"] == "('volume',)"
    assert kwargs["iterations"] == 7  # job.json "iterations" reaches the engine through the config


@pytest.mark.parametrize("engine, kind, code, text", [
    ("input_error", "input", worker.EXIT_ERROR, "volume is 2D (20 x 20 x 1)"),
    ("torch_oom", "out_of_memory", worker.EXIT_ERROR, "CUDA out of memory"),
    ("bug", "internal", worker.EXIT_INTERNAL, "internal error ZeroDivisionError: division by zero"),
    ("no_run_json", "internal", worker.EXIT_INTERNAL, "run.json cannot be read"),
])
def test_failures_give_one_error_event_and_a_traceback_in_the_log(tmp_path, engine, kind, code, text):
    job_dir = make_job(tmp_path)
    rc, events, err = finish(start(engine, job_dir))
    assert rc == code
    assert [e["event"] for e in events] == ["started", "error"]
    assert events[-1]["kind"] == kind and text in events[-1]["message"]
    assert events[-1]["log"] == str(job_dir / "worker.log")
    assert err == ""
    assert "Traceback (most recent call last)" in (job_dir / "worker.log").read_text()


def test_sigterm_cancels_cleanly(tmp_path):
    job_dir = make_job(tmp_path)
    proc = start("slow", job_dir)
    read_lines_until(proc, lambda e: e.get("iteration", 0) >= 3)
    proc.send_signal(signal.SIGTERM)
    code, events, _ = finish(proc)
    assert code == worker.EXIT_CANCELLED == 4
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled"
    assert "SIGTERM" in events[-1]["message"]
    assert sum(e["event"] in ("result", "error") for e in events) == 1


def test_cancel_file_cancels(tmp_path):
    job_dir = make_job(tmp_path)
    proc = start("slow", job_dir)
    read_lines_until(proc, lambda e: e.get("iteration", 0) >= 2)
    (job_dir / worker.CANCEL_FILE).touch()
    code, events, _ = finish(proc)
    assert code == worker.EXIT_CANCELLED
    assert events[-1]["kind"] == "cancelled" and "cancel file" in events[-1]["message"]


def test_engine_that_ignores_cancel_is_stopped_after_the_grace_period(tmp_path):
    job_dir = make_job(tmp_path, cancel_grace_s=0.5)
    proc = start("stuck", job_dir)
    read_lines_until(proc, lambda e: e["event"] == "progress")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, events, _ = finish(proc, timeout=20)
    assert code == worker.EXIT_CANCELLED
    assert time.monotonic() - t0 < 10
    assert [e["event"] for e in events] == ["error"] and events[0]["kind"] == "cancelled"


def run_module(args: list[str]) -> tuple[int, list[dict]]:
    proc = subprocess.run([sys.executable, "-m", "MedGSLib.worker", *args], capture_output=True, text=True,
                          cwd=REPO, env=env(), timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_missing_job_folder(tmp_path):
    code, events = run_module([str(tmp_path / "nowhere")])
    assert code == worker.EXIT_BAD_JOB == 2
    assert events == [{"event": "error", "kind": "job", "message": f"job folder {tmp_path / 'nowhere'} does not exist"}]


@pytest.mark.parametrize("content, text", [
    (None, "job.json does not exist"),
    ("{not json", "cannot be read as JSON"),
    ('{"version": 1}', "names no input volume"),
    ('{"version": 9, "input": "v.nrrd"}', "has version 9"),
    ('{"input": "v.nrrd", "options": {"factr": 2}}', "unknown option(s) ['factr']"),
    ('{"input": "v.nrrd", "iterations": -3}', "must be a positive integer"),
])
def test_bad_job_json(tmp_path, content, text):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    if content is not None:
        (job_dir / "job.json").write_text(content)
    code, events = run_module([str(job_dir)])
    assert code == worker.EXIT_BAD_JOB
    assert [e["event"] for e in events] == ["started", "error"]
    assert events[-1]["kind"] == "job" and text in events[-1]["message"]
    assert (job_dir / "worker.log").exists()


def test_usage():
    proc = subprocess.run([sys.executable, "-m", "MedGSLib.worker"], capture_output=True, text=True, cwd=REPO,
                          env=env(), timeout=60)
    assert proc.returncode == worker.EXIT_BAD_JOB
    assert proc.stdout == "" and "usage: python -m MedGSLib.worker JOB_DIR" in proc.stderr


def test_build_config_applies_preset_overrides_and_iterations():
    """job.json goes through config.resolve_config: `iterations` keeps the CPU variant's other settings."""
    cfg = worker.build_config({"options": {"preset": "fast", "device": "cpu", "seed": 4}, "iterations": 12,
                               "config": {"loss": {"ibfr": 0.0}}})
    assert cfg.preset == "fast+cpu+overrides" and cfg.schedule.iterations == 12
    assert cfg.device == "cpu" and cfg.seed == 4 and cfg.loss.ibfr == 0.0
    # the CPU variant (not the GPU preset's 8 frames and derived Gaussian count) survives `iterations`
    assert (cfg.schedule.frames_per_step, cfg.model.num_points, cfg.model.max_gaussians) == (4, 0, 0)  # sized from the data
    assert cfg.adjustments[-1] == {"what": "loss.ibfr = 0.0 (was 1.0)", "why": "job.json config"}
    plain = worker.build_config({"options": {"preset": "fast", "device": "cpu"}})
    assert plain.schedule.iterations == 0 and plain.preset == "fast+cpu"   # 0 = sized from the data


def test_build_config_rejects_unknown_keys():
    with pytest.raises(worker.JobError, match="unknown option 'loss.ibrf'"):
        worker.build_config({"options": {"preset": "fast", "device": "cpu"}, "config": {"loss": {"ibrf": 7.0}}})
