"""Evaluation of slice interpolation: the held-out-slice protocol against classical baselines.

Modules: `protocol` (crop, kept/held-out slices, slice axis), `metrics` (PSNR, SSIM, Dice,
HD95, ASSD), `baselines_intensity` / `baselines_labels` (the classical methods),
`medgs_method` (MedGS through the engine API), `run` (`run_eval`), `report` (report.json,
report.md, PNGs), `command` (`medgs eval` on files).

Names are imported lazily, so that `import MedGSLib.evaluation` stays instant and the ITK
contour worker (which imports this package) never loads SimpleITK.
"""
from __future__ import annotations

_EXPORTS = {
    "run_eval": ".run",
    "evaluate": ".run",
    "run_eval_files": ".command",
    "write_report": ".report",
    "SlicePlan": ".protocol",
    "INTENSITY_BASELINES": ".baselines_intensity",
    "LABEL_BASELINES": ".baselines_labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
