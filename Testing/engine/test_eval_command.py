"""`medgs eval` end to end on a cropped real CT, and the Python API `run_eval`.

MedGS itself is not run here (its engine API is tested elsewhere and trains for minutes); one
test stands in a fake engine API that interpolates linearly, to check the glue: intensity
normalisation there and back, label decoding, and the MedGS-vs-best-classical report.
"""
from __future__ import annotations

import argparse
import json
import sys
import types

import numpy as np
import pytest

from MedGSLib.errors import InputError, MedGSError
from MedGSLib.geometry import Geometry, Volume


@pytest.fixture(scope="module")
def small_case(shared_data, tmp_path_factory):
    """ct_abdomen3mm cropped in-plane to 64 x 80 (all 30 slices), written as NIfTI."""
    from MedGSLib.io import read_volume, write_volume

    img = read_volume(shared_data / "ct_abdomen3mm_image.nii.gz", kind="image")
    lab = read_volume(shared_data / "ct_abdomen3mm_labels.nii.gz", kind="labels")
    crop = (slice(None), slice(20, 84), slice(20, 100))
    folder = tmp_path_factory.mktemp("case")
    img_path = write_volume(img.with_array(np.ascontiguousarray(img.array[crop])), folder / "abd_image.nii.gz")
    lab_path = write_volume(lab.with_array(np.ascontiguousarray(lab.array[crop])), folder / "abd_labels.nii.gz")
    return img_path, lab_path


def _parse(argv):
    from MedGSLib.cli.eval import register

    parser = argparse.ArgumentParser(prog="medgs")
    register(parser.add_subparsers())
    return parser.parse_args(["eval", *argv])


def test_medgs_eval_end_to_end(small_case, tmp_path, capsys):
    img_path, lab_path = small_case
    out = tmp_path / "report"
    argv = [str(img_path), "--labels", str(lab_path), "--k", "2", "3", "4",
            "--methods", "linear", "nearest", "--label-methods", "nearest", "shape-cubic",
            "-o", str(out), "--no-progress"]
    args = _parse(argv)
    assert args.func(args) == 0
    for name in ("report.json", "report.md", "slice_k2.png", "slice_k3.png", "slice_k4.png",
                 "psnr_vs_k.png", "ssim_vs_k.png", "dice_vs_k.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "slice_k2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "report.json").read_text())
    assert report["n_slices"] == 30 and report["n_use"] == 25 and report["ks"] == [2, 3, 4]
    assert report["slice_axis"] == 2 and report["command"].startswith("medgs eval ")
    rows = {(r["task"], r["method"], r["k"]): r for r in report["results"]}
    # deterministic classical methods on a fixed real crop: pinned values, not bands
    pinned = {("image", "linear", 2): (30.1005, 0.87500), ("image", "nearest", 2): (26.8889, 0.81205),
              ("image", "linear", 3): (28.5587, 0.83490), ("image", "nearest", 3): (27.0590, 0.81231),
              ("image", "linear", 4): (27.3642, 0.79999), ("image", "nearest", 4): (26.0305, 0.77651),
              ("labels", "nearest", 2): (0.79894, 3.0401), ("labels", "shape-cubic", 2): (0.86850, 3.0),
              ("labels", "nearest", 3): (0.78738, 3.3256), ("labels", "shape-cubic", 3): (0.81017, 3.5441),
              ("labels", "nearest", 4): (0.74326, 4.7514), ("labels", "shape-cubic", 4): (0.76691, 4.7610)}
    for key, expected in pinned.items():
        names = ("psnr", "ssim") if key[0] == "image" else ("dice", "hd95")
        got = tuple(rows[key][n] for n in names)
        assert got == pytest.approx(expected, abs=1e-4), key
    for k in (2, 3, 4):
        assert report["best_classical"]["image"][str(k)]["psnr"]["method"] == "linear"
    md = (out / "report.md").read_text()
    assert "| 2 | linear | **" in md and "![psnr_vs_k.png](psnr_vs_k.png)" in md

    # The same folder again without --overwrite: refused with one line, report untouched.
    before = (out / "report.json").read_bytes()
    again = _parse(argv)
    assert again.func(again) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "report.json").read_bytes() == before


def test_unknown_method_is_one_error_line(small_case, tmp_path, capsys):
    img_path, _ = small_case
    args = _parse([str(img_path), "--methods", "cubic-magic", "-o", str(tmp_path / "r"), "--no-progress"])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown intensity method" in err[0]


def _volume(array, spacing=(1.0, 1.0, 2.0), kind="image"):
    return Volume(np.asarray(array), Geometry(spacing), kind=kind)


def test_run_eval_api_slices_along_the_chosen_axis():
    from MedGSLib.evaluation import run_eval

    rng = np.random.default_rng(0)
    arr = rng.normal(size=(14, 16, 21)).astype(np.float32)       # (Z, Y, X)
    img = _volume(arr, spacing=(3.0, 1.0, 1.0))                   # x has the largest spacing
    report = run_eval(img, None, ks=(2, 4), methods=["linear", "nearest"], label_methods=[])
    assert report["slice_axis"] == 0 and report["n_slices"] == 21 and report["n_use"] == 21
    assert report["slice_spacing_mm"] == 3.0
    report = run_eval(img, None, ks=(2,), methods=["linear"], label_methods=[], axis=2)
    assert report["n_slices"] == 14 and report["n_use"] == 13


def test_run_eval_rejects_mismatched_labels():
    from MedGSLib.evaluation import run_eval

    img = _volume(np.zeros((9, 12, 12), np.float32))
    lab = _volume(np.zeros((9, 12, 11), np.uint8), kind="labels")
    with pytest.raises(InputError, match="shape"):
        run_eval(img, lab, ks=(2,), methods=["linear"])
    lab = Volume(np.zeros((9, 12, 12), np.uint8), Geometry((1.0, 1.0, 3.0)), kind="labels")
    with pytest.raises(InputError, match="same grid"):
        run_eval(img, lab, ks=(2,), methods=["linear"])
    with pytest.raises(MedGSError):
        run_eval(img, None, ks=(2,), methods=["linear", "bogus"])


def _fake_api():
    """Stands in for MedGSLib.api: linear interpolation of frames and masks in [0, 1]."""
    from MedGSLib.evaluation.baselines_intensity import linear

    calls = []

    def default_config(preset_name="fast", device="auto", **overrides):
        return {"preset": preset_name, "device": device}

    def interpolate_array(frames, factor, *, masks=None, config=None, progress=None, cancel=None):
        assert frames.dtype == np.float32 and frames.min() >= 0.0 and frames.max() <= 1.0
        calls.append({"frames": frames.shape, "masks": None if masks is None else masks.shape, "config": config})
        probs = None if masks is None else np.stack([linear(m, factor) for m in masks])
        support = list(range(0, (frames.shape[0] - 1) * factor + 1, factor))
        return types.SimpleNamespace(image=linear(frames, factor), probs=probs,
                                     info={"device": "fake-cpu", "label_support": support})

    return types.SimpleNamespace(default_config=default_config, interpolate_array=interpolate_array, calls=calls)


def test_medgs_glue_with_a_stand_in_engine(small_case, tmp_path, monkeypatch):
    import MedGSLib
    from MedGSLib.evaluation import run_eval
    from MedGSLib.evaluation.report import write_report
    from MedGSLib.evaluation.run import evaluate
    from MedGSLib.io import read_volume

    fake = _fake_api()
    monkeypatch.setitem(sys.modules, "MedGSLib.api", fake)
    monkeypatch.setattr(MedGSLib, "api", fake, raising=False)
    img = read_volume(small_case[0], kind="image")
    lab = read_volume(small_case[1], kind="labels")
    report, figures = evaluate(img, lab, (2, 4), ["medgs", "linear"], ["linear", "medgs"],
                               preset="paper", device="cpu", case="abd")
    # One joint run per k: image and masks together, with the requested preset.
    assert len(fake.calls) == 2 and all(c["masks"] is not None for c in fake.calls)
    cfg = fake.calls[0]["config"]   # built by config.resolve_config, as every entry point's
    assert (cfg.preset, cfg.device, cfg.schedule.iterations) == ("paper", "cpu", 30_000)
    rows = {(r["task"], r["method"], r["k"]): r for r in report["results"]}
    for k in (2, 4):
        # Min/max normalisation is affine: linear in [0, 1] is linear in HU (float32 rounding).
        assert rows[("image", "medgs", k)]["psnr"] == pytest.approx(rows[("image", "linear", k)]["psnr"], abs=0.01)
        # the stand-in's masks are linear's, decoded by the product's decoder, whose support rule
        # drops pieces no kept slice supports: never below linear's Dice, pinned to its value
        assert rows[("labels", "medgs", k)]["dice"] >= rows[("labels", "linear", k)]["dice"]
        assert rows[("labels", "medgs", k)]["dice"] == pytest.approx({2: 0.80150724, 4: 0.74056470}[k], abs=1e-7)
        cmp = report["medgs_vs_classical"]["image"][str(k)]["psnr"]
        assert cmp["best_method"] == "linear" and abs(cmp["delta"]) < 0.01
    assert "fake-cpu" in report["device"]
    written = write_report(report, figures, tmp_path / "rep")
    md = written["report.md"].read_text()
    assert "## MedGS against the best classical method" in md and "| image | 2 | psnr |" in md
    assert set(figures.slices[2]) >= {"index", "truth", "linear", "medgs"}

    # Labels requested for MedGS alone still train on the image, and score only labels.
    fake.calls.clear()
    report = run_eval(img, lab, (2,), ["linear"], ["medgs"])
    assert [(r["task"], r["method"]) for r in report["results"]] == [("image", "linear"), ("labels", "medgs")]
    assert len(fake.calls) == 1


def test_label_value_lists():
    from MedGSLib.cli.eval import parse_values

    assert parse_values("2,41,4-6") == [2, 41, 4, 5, 6]
    assert parse_values(None) is None
    for bad in ("a,b", "5-3", ","):
        with pytest.raises(InputError):
            parse_values(bad)
