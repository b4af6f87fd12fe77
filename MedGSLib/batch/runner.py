"""`run_batch`: plan a cohort (skip the complete cases), run the rest on an executor, keep
OUTDIR/batch.json and batch.csv up to date after every case.

A rerun retries the failed and interrupted cases (a broken file fails again and is recorded
again) and skips the complete ones. A complete case folder written with other options is not
skipped: without --overwrite it is recorded as failed (the reason names the option), with
--overwrite it is run again and replaced.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import InputError
from .case import case_argv, command_line, parse_case, planned_options
from .manifest import Case
from .progress import CohortProgress
from .status import (DONE, FAILED, INTERRUPTED, NOT_RUN, SKIPPED, CaseRecord, completed_run, now_iso,
                     options_difference, self_check_fields, write_batch_files)

EXECUTORS = ("auto", "local", "gpus", "ray")


def plan(cases: list[Case], out_dir: Path, batch_tokens: list[str]) -> tuple[list[CaseRecord], list[dict]]:
    """A record per case (skipped and badly configured cases already decided) and the jobs to run."""
    records, jobs = [], []
    for case in cases:
        image = str(Path(case.image).absolute()) if case.image else None
        labels = str(Path(case.labels).absolute()) if case.labels else None
        case_dir = out_dir / case.name
        argv = case_argv(image, labels, str(case_dir), batch_tokens, case.options)
        rec = CaseRecord(case.name, image, labels, str(case_dir), command=command_line(argv))
        records.append(rec)
        try:
            ns = parse_case(argv)
        except InputError as err:
            rec.status, rec.reason = FAILED, f"bad options for this case: {err}"
            continue
        previous = completed_run(case_dir)
        if previous is not None:
            diff = options_difference(previous.get("options"), planned_options(ns))
            if diff is None:
                rec.status = SKIPPED
                rec.__dict__.update(self_check_fields(previous.get("result")))
                continue
            if not ns.overwrite:
                rec.status = FAILED
                rec.reason = (f"{case_dir} holds the outputs of a run with other options ({diff}); "
                              "pass --overwrite to replace them")
                continue
        jobs.append({"name": case.name, "argv": argv})
    return records, jobs


def choose_executor(executor: str, gpus: list[str], device: str = "auto") -> str:
    """auto: one process per GPU where several are visible and the runs are on "the" GPU (device
    auto or cuda), else this process."""
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    pinned_ok = device in ("auto", "cuda")
    if executor == "gpus" and not pinned_ok:
        raise InputError(f"--executor gpus gives each worker one GPU (CUDA_VISIBLE_DEVICES): use --device auto "
                         f"or cuda, not {device}")
    if executor == "auto":
        return "gpus" if len(gpus) > 1 and pinned_ok else "local"
    return executor


def cuda_gpus() -> list[str]:
    """visible_gpus() where CUDA works here, else [] (a stray CUDA_VISIBLE_DEVICES on a CPU box)."""
    from .local import visible_gpus
    try:
        import torch
    except ImportError:
        return []
    return visible_gpus() if torch.cuda.is_available() else []


def run_batch(cases: list[Case], out_dir, batch_tokens: list[str] = (), *, executor: str = "auto",
              cancel=None, report=None, command: str | None = None, inputs: str | None = None,
              ray_address: str | None = None, ray_init: dict | None = None, gpus: list[str] | None = None,
              device: str = "auto") -> dict:
    """Run a cohort; returns batch.json's content. `report(line)` gets one progress line per case
    (stderr by default). `device` is the batch's --device (it decides "auto"); `gpus` overrides
    the visible GPUs (tests). KeyboardInterrupt (and the CLI's SIGTERM) records the cases in flight
    as interrupted, the others as not-run, writes batch.json, and goes up."""
    from .local import run_in_process, run_per_gpu
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"the output folder {out_dir} is an existing file; give a folder name")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    if gpus is None:
        gpus = cuda_gpus() if executor in ("auto", "gpus") and device in ("auto", "cuda") else []
    chosen = choose_executor(executor, list(gpus), device)
    records, jobs = plan(cases, out_dir, list(batch_tokens))
    by_name = {r.name: r for r in records}
    t0 = time.monotonic()
    header = {"command": command, "inputs": inputs, "output": str(out_dir), "executor": chosen,
              "gpus": gpus if chosen == "gpus" else None, "started": now_iso()}

    def save():
        return write_batch_files(out_dir, header, records, time.monotonic() - t0)

    for r in records:
        if r.status in (SKIPPED, FAILED):
            report(f"{r.name}: {r.status}" + (f" ({r.reason})" if r.reason else " (complete from an earlier run)"))
    save()
    progress = CohortProgress(len(jobs))
    in_flight: set[str] = set()

    def on_start(name, worker):
        in_flight.add(name)
        by_name[name].worker = worker

    def on_done(name, outcome):
        in_flight.discard(name)
        rec = by_name[name]
        for key, value in outcome.items():
            setattr(rec, key, value)
        progress.case_finished(outcome.get("status") == DONE)
        report(progress.line(name, outcome))
        save()

    try:
        if chosen == "local":
            run_in_process(jobs, on_start, on_done, cancel=cancel)
        elif chosen == "gpus":
            if not gpus:
                raise InputError("--executor gpus: no GPU is visible (CUDA_VISIBLE_DEVICES, torch.cuda)")
            run_per_gpu(jobs, gpus, on_start, on_done, cancel=cancel)
        else:
            from .ray_executor import run_with_ray
            run_with_ray(jobs, on_start, on_done, cancel=cancel, address=ray_address, init=ray_init)
    except BaseException:
        _mark_stopped(records, in_flight, "stopped by Ctrl-C (or SIGTERM): nothing of it was kept")
        header["finished"] = now_iso()
        save()
        raise
    if any(r.status == INTERRUPTED for r in records) or (cancel is not None and cancel()):
        _mark_stopped(records, in_flight, "cancelled: nothing of it was kept")
    header["finished"] = now_iso()
    return save()


def _mark_stopped(records: list[CaseRecord], in_flight: set[str], reason: str) -> None:
    for r in records:
        if r.name in in_flight or r.status == INTERRUPTED:
            r.status, r.reason = INTERRUPTED, r.reason or reason
        elif r.status == NOT_RUN:
            r.reason = "the batch was stopped before this case started"

