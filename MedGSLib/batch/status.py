"""Per-case status of a cohort, and OUTDIR/batch.json + batch.csv.

A case folder is *complete* when it holds a run.json that parses and every output it lists
exists: outputs.OutputSet swaps the whole set in at once (run.json moved last where it cannot
swap), so a case killed while writing has no run.json in its folder and is run again.

Statuses: done (ran now), skipped (complete from an earlier run with the same options),
failed (one-line reason), interrupted (Ctrl-C or a cancel while it ran: nothing of it was
kept), not-run (the batch was stopped before it started).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DONE, SKIPPED, FAILED, INTERRUPTED, NOT_RUN = "done", "skipped", "failed", "interrupted", "not-run"
STATUSES = (DONE, SKIPPED, FAILED, INTERRUPTED, NOT_RUN)
BATCH_VERSION = 1
CSV_COLUMNS = ("name", "status", "reason", "seconds", "gain_db", "dice_gain", "choice", "worker", "started",
               "finished", "image", "labels", "output")
# run options that do not change what a case's folder holds (compared when deciding to skip)
_NOT_COMPARED = {"verbose", "output", "overwrite", "quiet", "resume", "checkpoint_every", "checkpoint_minutes",
                 "max_output_gb"}


@dataclass
class CaseRecord:
    name: str
    image: str | None
    labels: str | None
    output: str
    command: str = ""               # the `medgs run` command line that gives the same folder
    status: str = NOT_RUN
    reason: str | None = None
    seconds: float | None = None    # wall time of the case in its worker (read, train, write)
    started: str | None = None
    finished: str | None = None
    gain_db: float | None = None    # the run's own estimate over linear interpolation (self-check)
    dice_gain: float | None = None
    choice: str | None = None       # what the self-check delivered (model, mix, linear)
    worker: str | None = None       # "in-process", "gpu 0", "ray <node>"...
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def one_line(err: BaseException) -> str:
    """The reason of a failure in one line: the engine's sentence, or the type of a bug."""
    from ..errors import MedGSError
    text = " ".join(str(err).split())
    if isinstance(err, MedGSError) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def completed_run(case_dir) -> dict | None:
    """The run.json record of a complete case folder, else None (missing, half-written, unreadable)."""
    path = Path(case_dir) / "run.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("outputs"), dict) or "result" not in record:
        return None
    for p in _listed_paths(record["outputs"]):
        if not Path(p).exists():
            return None
    return record


def _listed_paths(outputs: dict):
    for value in outputs.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                if isinstance(v, str):
                    yield v
                elif isinstance(v, dict) and isinstance(v.get("path"), str):
                    yield v["path"]


def options_difference(recorded: dict | None, planned: dict) -> str | None:
    """None when run.json's options are this case's (paths and output-only switches aside), else
    the first differing option as "name: old -> new"."""
    from ..io import json_safe
    recorded = recorded or {}
    planned = json_safe(planned)
    for key in sorted(set(recorded) | set(planned)):
        if key in _NOT_COMPARED:
            continue
        a, b = recorded.get(key), planned.get(key)
        if key in ("input", "labels") and a and b:
            a, b = str(Path(a).resolve()), str(Path(b).resolve())
        if a != b:
            return f"{key}: {a!r} -> {b!r}"
    return None


def self_check_fields(info: dict | None) -> dict:
    """gain_db, dice_gain and choice of a run's result (None where the run had no self-check)."""
    check = (info or {}).get("self_check") or {}
    return {"gain_db": check.get("gain_db"), "dice_gain": check.get("dice_gain"), "choice": check.get("choice")}


def summary(records: list[CaseRecord], wall_s: float) -> dict:
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    done = [r for r in records if r.status == DONE]
    gains = [r.gain_db for r in records if r.gain_db is not None and r.status in (DONE, SKIPPED)]
    return {"cases": len(records), **counts, "wall_s": round(wall_s, 3),
            # cohort throughput of this call: the cases it ran over its wall time (skips excluded)
            "cases_per_minute": round(60.0 * len(done) / wall_s, 3) if done and wall_s > 0 else None,
            "mean_case_s": round(sum(r.seconds for r in done) / len(done), 3) if done else None,
            "mean_gain_db": round(sum(gains) / len(gains), 4) if gains else None}


def write_batch_files(out_dir, header: dict, records: list[CaseRecord], wall_s: float) -> dict:
    """OUTDIR/batch.json and batch.csv, each written atomically (rewritten after every case)."""
    import csv
    import io as _io

    from ..io import atomic_output, write_json
    out_dir = Path(out_dir)
    doc = dict(header)
    doc.update({"version": BATCH_VERSION, "updated": now_iso(), "summary": summary(records, wall_s),
                "cases": [r.to_dict() for r in records]})
    write_json(doc, out_dir / "batch.json", overwrite=True)
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in records:
        d = r.to_dict()
        w.writerow(["" if d[c] is None else (f"{d[c]:.3f}" if isinstance(d[c], float) else d[c]) for c in CSV_COLUMNS])
    with atomic_output(out_dir / "batch.csv", overwrite=True) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return doc
