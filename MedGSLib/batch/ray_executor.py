"""Several GPUs, several machines: Ray (optional, `pip install 'medgs[batch]'`), one task per case.

Each case is a Ray task asking for one GPU (none where the cluster has no GPU): Ray schedules
them over every node's GPUs and sets CUDA_VISIBLE_DEVICES for each task; its worker processes
are reused, so a worker pays CUDA's context and the gsplat build once. Every node needs MedGS
installed and must see the input and output paths (a shared file system).
Without an address Ray starts a local instance on this machine (CI runs a tiny cohort through
one on the CPU; Ray 2.60 has no in-process `local_mode` any more). Ray is imported only here,
only when asked for.
"""
from __future__ import annotations

import os

from ..errors import InputError
from .status import FAILED


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray, which is not installed: pip install 'medgs[batch]' "
                         "(or pip install ray), or use --executor local") from None
    return ray


def _ray_case(job: dict) -> dict:
    """The task body, in a Ray worker process."""
    import socket

    from .case import run_case
    outcome = run_case(job)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    outcome["worker"] = f"ray {socket.gethostname()}" + (f" gpu {gpu}" if gpu else "")
    return outcome


def run_with_ray(jobs, on_start, on_done, cancel=None, *, address: str | None = None, init: dict | None = None,
                 gpus_per_case: float | None = None, poll_s: float = 0.5) -> None:
    """Submit every job as a task, record each as it finishes. A task whose worker died fails
    that case only. Ctrl-C cancels the tasks still queued or running (each unwinds its case)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": True}
        kwargs.update(init or {})     # e.g. num_cpus for a local instance
        ray.init(address=address, **kwargs)
    try:
        if gpus_per_case is None:
            gpus_per_case = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus_per_case, num_cpus=1, max_retries=0)(_ray_case)
        refs = {}
        for job in jobs:
            if cancel is not None and cancel():
                break
            refs[task.remote(job)] = job["name"]
            on_start(job["name"], "ray")
        pending = list(refs)
        try:
            while pending:
                if cancel is not None and cancel():
                    raise KeyboardInterrupt
                done, pending = ray.wait(pending, num_returns=1, timeout=poll_s)
                for ref in done:
                    try:
                        outcome = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - the worker died or Ray failed it
                        outcome = {"status": FAILED, "worker": "ray", "reason": _ray_reason(err)}
                    on_done(refs[ref], outcome)
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass
            raise
    finally:
        if started_here:
            ray.shutdown()


def _ray_reason(err: BaseException) -> str:
    """Ray's exceptions carry multi-line tracebacks; the first line says what happened."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__

