"""`medgs batch`: a cohort of volumes, one `medgs run` folder per case, resumable, fault-isolated.

Modules: `manifest` (the cases: a folder with a label naming rule, or a CSV manifest), `case`
(a case's `medgs run` command line, run in this process through the `medgs run` code path),
`status` (per-case status, completeness of a case folder, batch.json / batch.csv), `local`
(in-process and one-process-per-GPU executors, `visible_gpus`), `ray_executor` (Ray, optional),
`progress` (cohort ETA), `runner` (`run_batch`: plan, skip, run, record).
"""
from __future__ import annotations
