"""Several GPUs, several machines: Ray (optional, `pip install 'medgs[batch]'`), one call per case.

A Ray task that asks for a GPU gets a fresh worker process by default (Ray's max_calls=1 for
GPU tasks), which would pay CUDA's context and the gsplat build for every case. So each GPU of
the cluster gets one long-lived Ray actor (num_gpus=1: Ray pins it with CUDA_VISIBLE_DEVICES
for its whole life), and each case is one call to a free actor. Without GPUs: one actor per
node (training uses every core of its node). A case whose actor dies (a segfault, the OOM
killer) fails that case only; Ray restarts the actor for the next one. Every node needs MedGS
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


class _CaseWorker:
    """A Ray actor: one per GPU (or node), alive for the whole batch."""

    def run(self, job: dict) -> dict:
        import socket

        from .case import run_case
        outcome = run_case(job)
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
        outcome["worker"] = f"ray {socket.gethostname()}" + (f" gpu {gpu}" if gpu else "")
        return outcome


def actor_count(resources: dict, alive_nodes: int) -> tuple[int, int]:
    """(actors, GPUs per actor) for a cluster's resources: one per whole GPU, else one per node."""
    gpus = int(resources.get("GPU", 0))
    return (gpus, 1) if gpus >= 1 else (max(1, alive_nodes), 0)


def run_with_ray(jobs, on_start, on_done, cancel=None, *, address: str | None = None, init: dict | None = None,
                 poll_s: float = 0.5) -> None:
    """Feed the jobs to one actor per GPU, record each case as it finishes. Ctrl-C cancels the
    calls in flight (each unwinds its case) and goes up."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": True}
        kwargs.update(init or {})     # e.g. num_cpus for a local instance
        ray.init(address=address, **kwargs)
    try:
        n, gpus = actor_count(ray.cluster_resources(), sum(1 for nd in ray.nodes() if nd.get("Alive")))
        actor_cls = ray.remote(num_gpus=gpus, num_cpus=1, max_restarts=-1, max_task_retries=0)(_CaseWorker)
        free = [actor_cls.remote() for _ in range(min(n, len(jobs)))]
        queue = list(jobs)
        running = {}                  # ref -> (name, actor)
        try:
            while queue or running:
                if cancel is not None and cancel():
                    raise KeyboardInterrupt
                while queue and free:
                    job, actor = queue.pop(0), free.pop()
                    running[actor.run.remote(job)] = (job["name"], actor)
                    on_start(job["name"], "ray")
                done, _ = ray.wait(list(running), num_returns=1, timeout=poll_s)
                for ref in done:
                    name, actor = running.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - the actor died, or Ray failed the call
                        outcome = {"status": FAILED, "worker": "ray", "reason": _ray_reason(err)}
                    free.append(actor)        # a dead actor is restarted by Ray (max_restarts)
                    on_done(name, outcome)
        except BaseException:
            for ref in running:
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

