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
    """A worker process: pinned to `gpu` before torch is imported, then cases until the sentinel.
    `tasks` / `results`: this worker's own ends of its two pipes (see run_per_gpu)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu

    def stop(_signum, _frame):
        raise KeyboardInterrupt    # unwinds the case: its staging folder is removed
    signal.signal(signal.SIGTERM, stop)
    import logging
    logging.basicConfig(level=logging.WARNING, format=f"[gpu {gpu}] %(levelname)s %(name)s: %(message)s")
    while True:
        job = tasks.recv()
        if job is None:
            return
        results.send(("start", gpu, job["name"], None))
        try:
            outcome = run_case(job)
        except KeyboardInterrupt:
            results.send(("done", gpu, job["name"], {"status": INTERRUPTED, "reason": "stopped by Ctrl-C"}))
            return
        # as this process sees it (the parent's label would only repeat what it asked for)
        outcome["worker"] = f"gpu {os.environ.get('CUDA_VISIBLE_DEVICES')}"
        outcome["extra"] = _device_seen()
        results.send(("done", gpu, job["name"], outcome))


def _device_seen() -> dict:
    """The GPU this worker's torch ran on: its name and UUID show which physical GPU it was."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"cuda_device": None}
    props = torch.cuda.get_device_properties(0)
    return {"cuda_device": props.name, "cuda_uuid": str(getattr(props, "uuid", None))}


def run_per_gpu(jobs, gpus: list[str], on_start, on_done, cancel=None, poll_s: float = 0.5) -> None:
    """One long-lived worker process per GPU (CUDA_VISIBLE_DEVICES=<gpu> in its environment); the
    parent hands the next case to whichever worker is free. A worker that dies (a segfault, the OOM
    killer) fails its case only: a new worker takes its GPU and the rest go on.

    Each worker has its own two pipes, not shared queues: a process SIGKILLed while its queue's
    feeder thread held the queue's lock leaves that lock held for good, and with one results queue
    for all workers the next worker's message then never arrived (the run hung; seen in the test
    that kills a worker). A pipe has one writer: a dead writer only ends its own pipe."""
    import multiprocessing as mp
    from multiprocessing.connection import wait
    ctx = mp.get_context("spawn")      # a fresh interpreter: CUDA is never inherited half set up
    pending = list(jobs)
    workers: dict[str, tuple] = {}     # gpu -> (process, task writer, result reader)
    given: dict[str, dict | None] = {}     # the case handed to each worker, until it is done
    started: dict[str, bool] = {}
    deaths = dict.fromkeys(gpus, 0)       # deaths outside a case (a worker that cannot even start)
    names = {job["name"] for job in jobs}
    finished: set[str] = set()

    def feed(gpu):
        job = pending.pop(0) if pending else None
        given[gpu], started[gpu] = job, False
        workers[gpu][1].send(job)

    def start(gpu):
        task_r, task_w = ctx.Pipe(duplex=False)
        res_r, res_w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker_main, args=(gpu, task_r, res_w), name=f"medgs-batch-gpu{gpu}", daemon=True)
        p.start()
        task_r.close()      # the child's ends: closed here, so that its death ends the pipes
        res_w.close()
        workers[gpu] = (p, task_w, res_r)
        feed(gpu)

    def handle(gpu, msg):
        kind, _, name, outcome = msg
        if kind == "start":
            started[gpu] = True
            on_start(name, f"gpu {gpu}")
            return
        finished.add(name)
        outcome.setdefault("worker", f"gpu {gpu}")
        on_done(name, outcome)
        if outcome.get("status") != INTERRUPTED:
            feed(gpu)

    def died(gpu, p):
        job, was_started = given.get(gpu), started.get(gpu)
        _, task_w, res_r = workers.pop(gpu)
        task_w.close()
        res_r.close()
        if job is not None and was_started:    # died in the middle of a case: that case fails
            finished.add(job["name"])
            on_done(job["name"], {"status": FAILED, "worker": f"gpu {gpu}",
                                  "reason": f"the worker process on GPU {gpu} died (exit code {p.exitcode})"})
            start(gpu)
            return
        if job is not None:                   # never began it: the case goes back to the queue
            pending.insert(0, job)
        if job is None and p.exitcode == 0:   # took its sentinel
            return
        deaths[gpu] += 1
        if deaths[gpu] <= _MAX_IDLE_DEATHS and pending:
            start(gpu)

    try:
        for gpu in gpus:
            start(gpu)
        while finished != names:
            if cancel is not None and cancel():
                raise KeyboardInterrupt
            readers = {w[2]: gpu for gpu, w in workers.items()}
            for r in wait(list(readers), timeout=poll_s):
                gpu = readers[r]
                try:
                    handle(gpu, r.recv())
                except (EOFError, OSError):    # the worker is gone; `died` below decides
                    pass
            for gpu, (p, _, _) in list(workers.items()):
                if not p.is_alive():
                    died(gpu, p)
            if not workers:               # every worker gone, cases left: they could not start
                for name in sorted(names - finished):
                    finished.add(name)
                    on_done(name, {"status": FAILED, "reason": "lost: no worker process could start it"})
    except BaseException:
        _stop([w[0] for w in workers.values()])
        for gpu, (_, _, r) in list(workers.items()):   # cases that finished while we were stopping are kept
            try:
                while r.poll(0.2):
                    msg = r.recv()
                    if msg[0] == "done" and msg[3].get("status") != INTERRUPTED:
                        finished.add(msg[2])
                        msg[3].setdefault("worker", f"gpu {gpu}")
                        on_done(msg[2], msg[3])
            except (EOFError, OSError):
                pass
        raise
    finally:
        for p, task_w, res_r in workers.values():
            p.join(timeout=5)
            task_w.close()
            res_r.close()


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
