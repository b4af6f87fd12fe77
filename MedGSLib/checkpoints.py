"""Periodic training checkpoints, and resuming a killed run from the last one.

A `Checkpointing` is made active around a training call (`with active(ck): api.run(...)`);
`Trainer.train` asks `current()` for it, so the pipeline functions in between need no extra
argument. Every `every_iterations` steps (or `every_seconds`, whichever comes first) the whole
training state is saved atomically: model, optimizer moments, step, the trainer's random
generator and torch's global one, the densification statistics and the loop's own state
(the PSNR window of the early stop). Resuming loads all of it, so a killed run resumed from
step k ends exactly where the uninterrupted run ends (same seed, same device: CPU results are
bit-identical; GPU kernels may reorder sums).

A checkpoint belongs to one run: its `fingerprint` (inputs' size and mtime, options, training
configuration) must match on resume, or resuming is refused naming what differs.
"""
from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, MedGSError

log = logging.getLogger(__name__)

FORMAT = "medgs-resume-1"
DEFAULT_EVERY_SECONDS = 300.0

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("medgs_checkpointing", default=None)


def file_fingerprint(path) -> list | None:
    """(name, size, mtime_ns) of an input file: changed inputs must not resume an old state."""
    if path is None:
        return None
    st = os.stat(path)
    return [Path(path).name, int(st.st_size), int(st.st_mtime_ns)]


class Checkpointing:
    def __init__(self, path: str | os.PathLike, fingerprint: dict, *, resume: bool = False,
                 every_iterations: int = 0, every_seconds: float = DEFAULT_EVERY_SECONDS):
        if int(every_iterations) < 0:
            raise InputError(f"checkpoint interval must be 0 (time only) or a positive number of iterations, "
                             f"got {every_iterations}")
        if not every_seconds or float(every_seconds) <= 0:
            every_seconds = float("inf")
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.resume = resume
        self.every_iterations = int(every_iterations)
        self.every_seconds = float(every_seconds)
        self.resumed_step: int | None = None
        self.saved_step: int | None = None
        self._last_save = time.monotonic()
        self._trainer_id = None
        self._save_failed = False

    # ------------------------------------------------------------ used by Trainer.train
    def resume_into(self, trainer) -> dict | None:
        """Load the saved state into `trainer` when resuming; returns the loop state or None."""
        self._trainer_id = id(trainer)
        self._last_save = time.monotonic()
        if not self.resume:
            return None
        if not self.path.exists():
            log.warning("no checkpoint at %s: training from the start", self.path)
            return None
        import torch

        from .io import load_torch
        ck = load_torch(self.path)
        if not isinstance(ck, dict) or ck.get("format") != FORMAT:
            raise InputError(f"{self.path.name} is not a MedGS resume checkpoint")
        differ = _differences(ck.get("fingerprint", {}), self.fingerprint)
        if differ:
            raise InputError(f"the checkpoint {self.path} belongs to another run ({', '.join(differ[:4])} differ); "
                             f"run without --resume to start again")
        state = ck["trainer"]
        if list(state.get("shape", [])) != [trainer.F, trainer.H, trainer.W] or state.get("pipeline") != trainer.pipeline:
            raise InputError(f"the checkpoint {self.path} was made for frames {state.get('shape')} "
                             f"({state.get('pipeline')}), not {[trainer.F, trainer.H, trainer.W]} ({trainer.pipeline})")
        trainer.load_checkpoint(state, resume_optimizer=True)
        torch.set_rng_state(ck["torch_rng"])
        self.resumed_step = trainer.step
        log.info("resumed training at step %d from %s", trainer.step, self.path)
        return dict(ck["loop"])

    def after_step(self, trainer, loop: dict) -> None:
        if id(trainer) != self._trainer_id:
            return     # a second trainer in the same call is not the one being checkpointed
        due = self.every_iterations and trainer.step % self.every_iterations == 0
        if due or time.monotonic() - self._last_save >= self.every_seconds:
            self.save(trainer, loop)

    # ------------------------------------------------------------ files
    def save(self, trainer, loop: dict) -> None:
        import torch

        from .io import save_torch
        state = {"format": FORMAT, "fingerprint": self.fingerprint, "trainer": trainer.checkpoint(),
                 "torch_rng": torch.get_rng_state(),
                 "loop": {"psnr_window": [float(x) for x in loop["psnr_window"]],
                          "last_check": None if loop["last_check"] is None else float(loop["last_check"]),
                          "isects": int(loop["isects"]),
                          # self-validation (selfcheck.py): the shortened plan and the early-stop state
                          "iters": int(loop.get("iters", trainer.cfg.schedule.iterations)),
                          "val_best": float(loop.get("val_best", float("-inf"))),
                          "val_stale": int(loop.get("val_stale", 0))}}
        try:
            save_torch(state, self.path, overwrite=True)
        except (MedGSError, OSError) as err:
            # the run itself can still finish: say it once, keep training
            if not self._save_failed:
                log.warning("could not save a checkpoint (%s); training goes on without one", err)
            self._save_failed = True
            return
        self._last_save = time.monotonic()
        self.saved_step = trainer.step

    def discard(self) -> None:
        """The run finished and its outputs are in place: the checkpoint has no use left."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif _norm(a) != _norm(b):
            out.append(prefix + key)
    return out


def _norm(v):
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def current() -> Checkpointing | None:
    """The checkpointing of the training now running in this context, if any."""
    return _ACTIVE.get()


@contextmanager
def active(ck: Checkpointing | None) -> Iterator[Checkpointing | None]:
    token = _ACTIVE.set(ck)
    try:
        yield ck
    finally:
        _ACTIVE.reset(token)
