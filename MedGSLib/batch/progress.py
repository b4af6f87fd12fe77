"""Progress over a cohort: counts, throughput and an ETA, one line per finished case."""
from __future__ import annotations

import time


class CohortProgress:
    """ETA from the cohort's own throughput (wall time per case done), so that several workers
    running at once are counted as they really run; a case failing at once (a broken file)
    counts as finished but not in the rate."""

    def __init__(self, to_run: int, clock=time.monotonic):
        self.to_run = int(to_run)
        self.finished = 0
        self.done = 0
        self._clock = clock
        self._t0 = clock()

    def case_finished(self, done: bool = True) -> None:
        self.finished += 1
        self.done += bool(done)

    def eta_s(self) -> float | None:
        if self.done == 0:
            return None
        elapsed = self._clock() - self._t0
        return elapsed / self.done * (self.to_run - self.finished)

    def cases_per_minute(self) -> float | None:
        elapsed = self._clock() - self._t0
        return 60.0 * self.done / elapsed if self.done and elapsed > 0 else None

    def line(self, name: str, outcome: dict) -> str:
        what = outcome.get("status", "?")
        if outcome.get("seconds") is not None:
            what += f" in {outcome['seconds']:.1f} s"
        if outcome.get("gain_db") is not None:
            what += f", estimated gain {outcome['gain_db']:+.2f} dB"
        if outcome.get("reason"):
            what += f": {outcome['reason']}"
        rate, eta = self.cases_per_minute(), self.eta_s()
        tail = ""
        if rate is not None:
            tail = f" | {rate:.2f} cases/min"
            if eta is not None and self.finished < self.to_run:
                tail += f", ETA {format_duration(eta)}"
        return f"[{self.finished}/{self.to_run}] {name}: {what}{tail}"


def format_duration(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"
