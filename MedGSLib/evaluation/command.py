"""File-level entry of `medgs eval`: read the case, run the protocol, write the report folder."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .methods import INTENSITY_METHODS as DEFAULT_METHODS, LABEL_METHODS as DEFAULT_LABEL_METHODS
from .report import check_output_dir, write_report
from .run import evaluate


def case_name(path) -> str:
    """File name without its volume extension(s): ct_abdomen3mm_image.nii.gz -> ct_abdomen3mm_image."""
    from ..io import volume_stem
    return volume_stem(path)


def eval_command_line(input_path, out_dir, *, labels_path=None, ks=(2, 3, 4), methods=DEFAULT_METHODS,
                      label_methods=DEFAULT_LABEL_METHODS, axis="auto", preset="fast", device="auto",
                      label_values=None, overwrite=False, overrides=()) -> str:
    """The `medgs eval` command line that reproduces a run (recorded in the report)."""
    parts = ["medgs", "eval", str(input_path)]
    if labels_path is not None:
        parts += ["--labels", str(labels_path)]
    parts += ["--k", *[str(k) for k in ks], "--methods", *methods]
    if labels_path is not None:
        parts += ["--label-methods", *label_methods]
        if label_values is not None:
            parts += ["--label-values", ",".join(str(v) for v in label_values)]
    parts += ["--axis", str(axis), "--preset", preset, "--device", device, "-o", str(out_dir)]
    if overrides:
        parts += ["--set", *overrides]
    if overwrite:
        parts.append("--overwrite")
    return shlex.join(parts)


def run_eval_files(input_path, out_dir, *, labels_path=None, ks=(2, 3, 4), methods=DEFAULT_METHODS,
                   label_methods=DEFAULT_LABEL_METHODS, axis="auto", preset: str = "fast",
                   device: str = "auto", label_values=None, overwrite: bool = False,
                   command: str | None = None, overrides=(), progress_bar: bool = True,
                   progress: Callable[[dict], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> dict:
    """Evaluate one image file (and optional label map) and write REPORTDIR; returns the report."""
    from ..io import read_volume

    out = check_output_dir(out_dir, overwrite)      # fail now, not after minutes of training
    input_path = Path(input_path)
    if not input_path.is_file():
        raise InputError(f"input image {input_path} does not exist")
    if labels_path is not None and not Path(labels_path).is_file():
        raise InputError(f"label map {labels_path} does not exist")
    image = read_volume(input_path, kind="image")
    labels = read_volume(labels_path, kind="labels") if labels_path is not None else None
    if command is None:
        command = eval_command_line(input_path, out, labels_path=labels_path, ks=ks, methods=methods,
                                    label_methods=label_methods, axis=axis, preset=preset, device=device,
                                    label_values=label_values, overwrite=overwrite, overrides=overrides)
    report, figures = evaluate(
        image, labels, ks, methods, label_methods if labels is not None else (), axis=axis, preset=preset,
        device=device, label_values=label_values, case=case_name(input_path), command=command,
        progress_bar=progress_bar, progress=progress, cancel=cancel, overrides=overrides,
    )
    report["input"] = {"image": str(input_path), "labels": str(labels_path) if labels_path else None}
    written = write_report(report, figures, out, overwrite=overwrite)
    report["written"] = {name: str(p) for name, p in written.items()}
    return report
