"""Executors on this machine: the cases in this process, or one long-lived process per GPU.

Every executor takes the jobs ({"name", "argv"}, see case.py) and two callbacks:
`on_start(name, worker)` when a case begins and `on_done(name, outcome)` with its CaseRecord
fields. A failing case is an outcome, never an exception. Ctrl-C (KeyboardInterrupt, or the
CLI's SIGTERM) stops the workers and goes up to the caller, which records the cases in flight
as interrupted; their output sets were never committed (outputs.OutputSet removes the staging
folder on the way out), so no half-written case folder exists.

Why one process per GPU and not several: 12 `medgs run` processes on one H200 all timed out
where one alone takes ~13 s (issue 16); one process per GPU also pays CUDA's context, the
compiled kernels and the gsplat build once, not once per case.
"""
from __future__ import annotations

import os
import queue
import signal
import sys

from .case import run_case
from .status import FAILED, INTERRUPTED

_MAX_IDLE_DEATHS = 3


def visible_gpus(env=None, device_count=None) -> list[str]:
    """The GPUs to use, as CUDA_VISIBLE_DEVICES entries, one worker each.

    CUDA_VISIBLE_DEVICES set: its entries in order (indices, GPU-/MIG- UUIDs), up to the first
    empty or negative one (CUDA ignores the rest the same way), duplicates once; "" or "-1"
    means no GPU. Unset: 0 .. device_count - 1 (`device_count` an int, a callable, or None for
    torch.cuda.device_count(); 0 without torch).
    """
    env = os.environ if env is None else env
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        out: list[str] = []
        for item in value.split(","):
            item = item.strip()
            if not item or item.startswith("-"):
                break
            if item not in out:
                out.append(item)
        return out
    if callable(device_count):
        device_count = device_count()
    if device_count is None:
        try:
            import torch
        except ImportError:
            return []
        device_count = torch.cuda.device_count()
    return [str(i) for i in range(int(device_count))]


def run_in_process(jobs, on_start, on_done, cancel=None) -> None:
    """One case after the other in this process (the CPU, or the one GPU of this process)."""
    for job in jobs:
        if cancel is not None and cancel():
            return
        on_start(job["name"], "in-process")
        outcome = run_case(job, cancel=cancel)
        outcome["worker"] = "in-process"
        on_done(job["name"], outcome)
        if outcome["status"] == INTERRUPTED:
            return


def _worker_main(gpu: str | None, tasks, results) -> None:
    """A worker process: pinned to `gpu` before torch is imported, then cases until the sentinel."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu

    def stop(_signum, _frame):
        raise KeyboardInterrupt    # unwinds the case: its staging folder is removed
    signal.signal(signal.SIGTERM, stop)
    import logging
    logging.basicConfig(level=logging.WARNING, format=f"[gpu {gpu}] %(levelname)s %(name)s: %(message)s")
    while True:
        job = tasks.get()
        if job is None:
            return
        results.put(("start", gpu, job["name"], None))
        try:
            outcome = run_case(job)
        except KeyboardInterrupt:
            results.put(("done", gpu, job["name"], {"status": INTERRUPTED, "reason": "stopped by Ctrl-C"}))
            return
        # as this process sees it (the parent's label would only repeat what it asked for)
        outcome["worker"] = f"gpu {os.environ.get('CUDA_VISIBLE_DEVICES')}"
        outcome["extra"] = _device_seen()
        results.put(("done", gpu, job["name"], outcome))


def _device_seen() -> dict:
    """The GPU this worker's torch ran on: its name and UUID show which physical GPU it was."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"cuda_device": None}
    props = torch.cuda.get_device_properties(0)
    return {"cuda_device": props.name, "cuda_uuid": str(getattr(props, "uuid", None))}


def run_per_gpu(jobs, gpus: list[str], on_start, on_done, cancel=None, poll_s: float = 0.5) -> None:
    """One long-lived worker process per GPU (CUDA_VISIBLE_DEVICES=<gpu> in its environment),
    fed from one queue. A worker that dies (a segfault, the OOM killer) fails its case only: a
    new worker takes its GPU and the queue goes on."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")      # a fresh interpreter: CUDA is never inherited half set up
    tasks, results = ctx.Queue(), ctx.Queue()
    for job in jobs:
        tasks.put(job)
    for _ in gpus:
        tasks.put(None)
    workers = {}
    held: dict[str, str | None] = {}
    deaths = dict.fromkeys(gpus, 0)       # deaths outside a case (a worker that cannot even start)

    def start(gpu):
        p = ctx.Process(target=_worker_main, args=(gpu, tasks, results), name=f"medgs-batch-gpu{gpu}", daemon=True)
        p.start()
        workers[gpu], held[gpu] = p, None

    for gpu in gpus:
        start(gpu)
    names = {job["name"] for job in jobs}
    finished: set[str] = set()

    def handle(msg):
        kind, gpu, name, outcome = msg
        if kind == "start":
            held[gpu] = name
            on_start(name, f"gpu {gpu}")
        else:
            held[gpu] = None
            finished.add(name)
            outcome.setdefault("worker", f"gpu {gpu}")
            on_done(name, outcome)

    try:
        while finished != names:
            if cancel is not None and cancel():
                raise KeyboardInterrupt
            try:
                handle(results.get(timeout=poll_s))
                continue
            except queue.Empty:
                pass
            for gpu, p in list(workers.items()):
                if p.is_alive():
                    continue
                name = held.get(gpu)
                if name is not None:       # died in the middle of a case: that case fails, the rest go on
                    finished.add(name)
                    held[gpu] = None
                    on_done(name, {"status": FAILED, "worker": f"gpu {gpu}",
                                   "reason": f"the worker process on GPU {gpu} died (exit code {p.exitcode})"})
                    start(gpu)
                elif p.exitcode == 0 or deaths[gpu] >= _MAX_IDLE_DEATHS:
                    del workers[gpu]       # took its sentinel (the queue is empty), or cannot start at all
                else:
                    deaths[gpu] += 1
                    start(gpu)
            if not workers:               # every worker gone, cases left: lost between queue and start
                for name in sorted(names - finished):
                    finished.add(name)
                    on_done(name, {"status": FAILED, "reason": "lost: its worker process died before it started"})
    except BaseException:
        _stop(workers.values())
        while True:                       # cases that finished while we were stopping are kept
            try:
                msg = results.get(timeout=0.2)
            except (queue.Empty, OSError, EOFError):
                break
            if msg[0] == "done" and msg[3].get("status") != INTERRUPTED:
                handle(msg)
        raise
    finally:
        for p in workers.values():
            p.join(timeout=5)


def _stop(processes, grace_s: float = 20.0) -> None:
    """SIGTERM (the worker unwinds its case), then SIGKILL after `grace_s`."""
    import time
    processes = [p for p in processes if p.is_alive()]
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
