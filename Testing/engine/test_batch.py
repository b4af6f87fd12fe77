"""`medgs batch` on a cohort of tiny real crops of the example CT (geometry kept), on the CPU.

Plumbing, not quality: a few iterations and a few hundred Gaussians per case (the FAST options
of test_api_cli.py). What is pinned: statuses, reasons, skips, files, exit codes, and that a
batch case is bit for bit the `medgs run` of the same command line.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")

from MedGSLib.batch import local, manifest, runner, status  # noqa: E402
from MedGSLib.batch.case import case_argv, option_tokens  # noqa: E402
from MedGSLib.batch.progress import CohortProgress, format_duration  # noqa: E402
from MedGSLib.cli import main  # noqa: E402
from MedGSLib.errors import InputError  # noqa: E402

FAST = ["--factor", "2", "--iterations", "6", "--device", "cpu", "--seed", "0", "--max-gaussians", "400",
        "--set", "model.num_points=200"]
CROP = (9, 32, 28)                       # z, y, x: 9 slices of 32 x 28 voxels (3 mm)
CORNERS = {"liver": (10, 40, 40), "spine": (12, 60, 46), "upper": (0, 20, 60)}


def _crop(vol, z0, y0, x0):
    """A sub-volume with its geometry: same spacing and direction, origin at the corner voxel."""
    a = np.ascontiguousarray(vol.array[z0:z0 + CROP[0], y0:y0 + CROP[1], x0:x0 + CROP[2]])
    origin = vol.geometry.index_to_physical(np.array([x0, y0, z0], dtype=float))
    return vol.with_array(a, dataclasses.replace(vol.geometry, origin=tuple(float(c) for c in origin)))


@pytest.fixture(scope="module")
def example(repo_root):
    from MedGSLib.io import read_volume
    ex = repo_root / "Resources" / "Examples"
    return read_volume(ex / "ct_abdomen3mm_image.nii.gz"), read_volume(ex / "ct_abdomen3mm_labels.nii.gz", "labels")


@pytest.fixture(scope="module")
def cohort(example, tmp_path_factory):
    """Three real crops and one broken file (a gzip cut short), named by the _image/_labels rule;
    the liver crop has a label map with its two largest labels."""
    from MedGSLib.io import write_volume
    img, lab = example
    folder = tmp_path_factory.mktemp("cohort")
    for name, corner in CORNERS.items():
        write_volume(_crop(img, *corner), folder / f"{name}_image.nii.gz")
    labels = _crop(lab, *CORNERS["liver"])
    values, counts = np.unique(labels.array[labels.array > 0], return_counts=True)
    keep = values[np.argsort(counts)[-2:]]
    write_volume(labels.with_array(np.where(np.isin(labels.array, keep), labels.array, 0)),
                 folder / "liver_labels.nii.gz")
    good = (folder / "spine_image.nii.gz").read_bytes()
    (folder / "broken_image.nii.gz").write_bytes(good[: len(good) // 3])
    return folder


def _batch(argv, capsys):
    code = main(["batch", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _cases(out_dir) -> dict:
    doc = json.loads((out_dir / "batch.json").read_text())
    return {c["name"]: c for c in doc["cases"]}


def test_cohort_three_done_one_failed_then_three_skips(cohort, tmp_path, capsys):
    out = tmp_path / "batch"
    code, stdout, err = _batch([str(cohort), "-o", str(out), *FAST], capsys)
    assert code == 1, err                             # some case failed
    cases = _cases(out)
    assert sorted(cases) == ["broken", "liver", "spine", "upper"]
    assert {n: c["status"] for n, c in cases.items()} == {"broken": "failed", "liver": "done", "spine": "done",
                                                          "upper": "done"}
    assert cases["broken"]["reason"].startswith("broken_image.nii.gz is damaged or truncated")
    assert "\n" not in cases["broken"]["reason"]
    assert not (out / "broken").exists()            # a failed case leaves no folder
    assert cases["liver"]["labels"] == str(cohort / "liver_labels.nii.gz")
    assert sorted(p.name for p in (out / "liver").iterdir()) == ["labels.nii.gz", "meshes", "run.json",
                                                                 "volume.nii.gz"]
    assert sorted(p.name for p in (out / "spine").iterdir()) == ["run.json", "volume.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["batch.csv", "batch.json", "liver", "spine", "upper"]
    for name in ("liver", "spine", "upper"):
        c = cases[name]
        assert c["seconds"] > 0 and c["worker"] == "in-process" and c["gain_db"] is not None
        rec = json.loads((out / name / "run.json").read_text())
        assert rec["result"]["self_check"]["gain_db"] == c["gain_db"]
        assert c["command"].startswith(f"medgs run {cohort / (name + '_image.nii.gz')} -o {out / name} ")
    rows = list(csv.DictReader((out / "batch.csv").open()))
    assert [(r["name"], r["status"]) for r in rows] == [("broken", "failed"), ("liver", "done"),
                                                       ("spine", "done"), ("upper", "done")]
    assert "3 done, 0 skipped, 1 failed of 4" in stdout and "failed broken: broken_image" in stdout
    assert "[4/4]" in err

    before = {n: (out / n / "volume.nii.gz").stat().st_mtime_ns for n in ("liver", "spine", "upper")}
    code, stdout, _ = _batch([str(cohort), "-o", str(out), *FAST], capsys)
    assert code == 1                                  # the broken case is retried, and fails again
    cases = _cases(out)
    assert {n: c["status"] for n, c in cases.items()} == {"broken": "failed", "liver": "skipped",
                                                          "spine": "skipped", "upper": "skipped"}
    assert cases["broken"]["reason"].startswith("broken_image.nii.gz is damaged or truncated")
    assert cases["spine"]["gain_db"] is not None     # read back from the case's run.json
    assert {n: (out / n / "volume.nii.gz").stat().st_mtime_ns for n in before} == before
    assert "0 done, 3 skipped, 1 failed of 4" in stdout

    # other options: complete folders are not taken for this run's, nor silently replaced
    code, stdout, _ = _batch([str(cohort), "-o", str(out), *FAST, "--seed", "1"], capsys)
    cases = _cases(out)
    assert cases["spine"]["status"] == "failed"
    assert cases["spine"]["reason"] == (f"{out / 'spine'} holds the outputs of a run with other options "
                                        "(seed: 0 -> 1); pass --overwrite to replace them")

    # eval aggregates the batch folder (the last batch.json: one with --seed 0, rewritten here)
    _batch([str(cohort), "-o", str(out), *FAST], capsys)
    report_dir = tmp_path / "report"
    assert main(["eval", str(out), "-o", str(report_dir)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((report_dir / "report.json").read_text())
    assert report["cases"] == 4 and report["counts"] == {"failed": 1, "skipped": 3}
    gains = [json.loads((out / n / "run.json").read_text())["result"]["self_check"]["gain_db"]
             for n in ("liver", "spine", "upper")]
    assert report["gain_db"]["n"] == 3
    assert report["gain_db"]["mean"] == pytest.approx(sum(gains) / 3, abs=1e-12)
    assert report["gain_db"]["min"] == min(gains) and report["gain_db"]["max"] == max(gains)
    assert "| broken | failed |" in (report_dir / "report.md").read_text()
    assert printed.startswith("4 cases (1 failed, 3 skipped); estimated gain over linear: mean ")


def test_batch_case_is_bit_for_bit_medgs_run(cohort, tmp_path, capsys):
    from MedGSLib.io import read_volume
    src = tmp_path / "one"
    src.mkdir()
    (src / "upper.nii.gz").write_bytes((cohort / "upper_image.nii.gz").read_bytes())
    code, _, err = _batch([str(src), "-o", str(tmp_path / "b"), *FAST, "-q"], capsys)
    assert code == 0, err
    assert main(["run", str(src / "upper.nii.gz"), "-o", str(tmp_path / "r"), *FAST, "-q"]) == 0
    a = read_volume(tmp_path / "b" / "upper" / "volume.nii.gz")
    b = read_volume(tmp_path / "r" / "volume.nii.gz")
    np.testing.assert_array_equal(a.array, b.array)
    assert a.geometry == b.geometry
    ra = json.loads((tmp_path / "b" / "upper" / "run.json").read_text())
    rb = json.loads((tmp_path / "r" / "run.json").read_text())
    assert ra["config"] == rb["config"]
    assert {k: v for k, v in ra["options"].items() if k != "output"} == \
        {k: v for k, v in rb["options"].items() if k != "output"}
    # a folder `medgs run` wrote is complete for the batch: a batch into it skips it
    assert status.completed_run(tmp_path / "r") is not None


def test_csv_manifest_with_labels_and_per_case_options(cohort, tmp_path, capsys):
    man = tmp_path / "cohort.csv"
    man.write_text("image,labels,name,options\n"
                   f"{cohort / 'liver_image.nii.gz'},{cohort / 'liver_labels.nii.gz'},liver3,"
                   "\"--factor 3 --no-meshes --set schedule.self_check=False\"\n"
                   f"{os.path.relpath(cohort / 'upper_image.nii.gz', tmp_path)},,,\n")
    out = tmp_path / "b"
    code, _, err = _batch([str(man), "-o", str(out), *FAST, "-q"], capsys)
    assert code == 0, err
    cases = _cases(out)
    assert sorted(cases) == ["liver3", "upper_image"]
    rec = json.loads((out / "liver3" / "run.json").read_text())
    assert rec["options"]["factor"] == 3.0 and rec["options"]["no_meshes"] is True
    # the case's --set comes after the batch's (both kept)
    assert rec["options"]["overrides"] == ["model.num_points=200", "schedule.self_check=False"]
    assert rec["labels"] == str(cohort / "liver_labels.nii.gz")
    assert sorted(p.name for p in (out / "liver3").iterdir()) == ["labels.nii.gz", "run.json", "volume.nii.gz"]
    assert rec["result"]["output_slices"] == (CROP[0] - 1) * 3 + 1
    assert cases["liver3"]["gain_db"] is None        # self-check off for this case
    assert json.loads((out / "upper_image" / "run.json").read_text())["result"]["output_slices"] == 17


def test_manifest_and_discovery_rules(cohort, tmp_path):
    cases = manifest.discover(cohort)
    assert [(c.name, os.path.basename(c.image), c.labels and os.path.basename(c.labels)) for c in cases] == [
        ("broken", "broken_image.nii.gz", None), ("liver", "liver_image.nii.gz", "liver_labels.nii.gz"),
        ("spine", "spine_image.nii.gz", None), ("upper", "upper_image.nii.gz", None)]
    plain = manifest.discover(cohort, None)            # --no-labels: every volume is an image
    assert [c.name for c in plain] == ["broken_image", "liver_image", "liver_labels", "spine_image", "upper_image"]
    seg = tmp_path / "seg"
    seg.mkdir()
    for n in ("a.nrrd", "a_seg.nrrd", "b.mha"):
        (seg / n).write_bytes(b"x")
    (seg / "notes.txt").write_text("not a volume")
    got = [(c.name, os.path.basename(c.image), c.labels and os.path.basename(c.labels))
           for c in manifest.discover(seg, "=_seg")]
    assert got == [("a", "a.nrrd", "a_seg.nrrd"), ("b", "b.mha", None)]
    with pytest.raises(InputError, match="bad --label-rule"):
        manifest.discover(seg, "_seg")
    with pytest.raises(InputError, match="no volume files"):
        manifest.discover(_empty(tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text("img,labels\nx.nii.gz,\n")
    with pytest.raises(InputError, match="has columns \\['img', 'labels'\\]"):
        manifest.read_manifest(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("image\na/x.nii.gz\nb/x.nii.gz\n")
    with pytest.raises(InputError, match="two cases named 'x'"):
        manifest.read_manifest(dup)
    lab_only = tmp_path / "lab.csv"
    lab_only.write_text("image,labels\n,seg/a_seg.nrrd\n")
    (c,) = manifest.read_manifest(lab_only)
    assert (c.name, c.image, c.labels, c.options) == ("a_seg", None, str(tmp_path / "seg" / "a_seg.nrrd"),
                                                     ["--labels-only"])


def _empty(tmp_path):
    p = tmp_path / "empty"
    p.mkdir()
    return p


def test_a_bad_case_option_fails_that_case_only(cohort, tmp_path):
    cases = [manifest.Case("upper", str(cohort / "upper_image.nii.gz"), None, ["--mesh-format", "gif"])]
    records, jobs = runner.plan(cases, tmp_path, FAST)
    assert jobs == [] and records[0].status == "failed"
    assert records[0].reason.startswith("bad options for this case: argument --mesh-format: invalid choice: 'gif'")


def test_interrupt_while_writing_keeps_finished_cases_and_no_half_folder(cohort, tmp_path, monkeypatch):
    """Ctrl-C while the second case writes its outputs: the first stays, the second leaves nothing
    (not even a staging folder), the third never starts; batch.json says so."""
    import MedGSLib.io as mio
    cases = [c for c in manifest.discover(cohort) if c.name != "broken"]
    real = mio.write_json
    calls = []

    def write_json(value, path, **kw):
        if str(path).endswith("run.json") or ".medgs-staging-" in str(path):
            calls.append(path)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real(value, path, **kw)

    monkeypatch.setattr(mio, "write_json", write_json)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        runner.run_batch(cases, out, FAST, executor="local", report=lambda line: None)
    monkeypatch.setattr(mio, "write_json", real)
    cases_json = _cases(out)
    assert {n: c["status"] for n, c in cases_json.items()} == {"liver": "done", "spine": "interrupted",
                                                               "upper": "not-run"}
    assert cases_json["spine"]["reason"] == "stopped by Ctrl-C (or SIGTERM): nothing of it was kept"
    assert sorted(p.name for p in out.iterdir()) == ["batch.csv", "batch.json", "liver"]
    assert status.completed_run(out / "liver") is not None
    # the rerun skips the finished case and runs the other two
    doc = runner.run_batch(cases, out, FAST, executor="local", report=lambda line: None)
    assert {c["name"]: c["status"] for c in doc["cases"]} == {"liver": "skipped", "spine": "done", "upper": "done"}


def test_cancel_stops_before_the_next_case(cohort, tmp_path):
    cases = [c for c in manifest.discover(cohort) if c.name != "broken"]
    lines = []
    doc = runner.run_batch(cases, tmp_path / "b", FAST, executor="local", report=lines.append,
                           cancel=lambda: bool(lines))
    assert [c["status"] for c in doc["cases"]] == ["done", "not-run", "not-run"]
    assert doc["cases"][1]["reason"] == "the batch was stopped before this case started"


def test_one_process_per_gpu_executor(cohort, tmp_path):
    """The multi-GPU path on a CPU box: two long-lived workers pinned to fake GPU ids (the CPU
    build of torch ignores CUDA_VISIBLE_DEVICES), one queue; same volumes as in-process."""
    from MedGSLib.io import read_volume
    cases = [c for c in manifest.discover(cohort) if c.name in ("spine", "upper", "broken")]
    doc = runner.run_batch(cases, tmp_path / "g", FAST, executor="gpus", gpus=["0", "1"], report=lambda line: None)
    got = {c["name"]: (c["status"], c["worker"]) for c in doc["cases"]}
    assert {n: s for n, (s, _) in got.items()} == {"broken": "failed", "spine": "done", "upper": "done"}
    assert {w for _, w in got.values()} <= {"gpu 0", "gpu 1"}
    assert doc["executor"] == "gpus" and doc["gpus"] == ["0", "1"]
    ref = runner.run_batch([c for c in cases if c.name == "upper"], tmp_path / "l", FAST, executor="local",
                           report=lambda line: None)
    assert ref["cases"][0]["status"] == "done"
    np.testing.assert_array_equal(read_volume(tmp_path / "g" / "upper" / "volume.nii.gz").array,
                                  read_volume(tmp_path / "l" / "upper" / "volume.nii.gz").array)


def test_a_worker_that_dies_fails_its_case_only(cohort, tmp_path):
    """A per-GPU worker killed (SIGKILL, as the OOM killer does) in the middle of a case: that case
    fails with the exit code, a new worker takes the GPU and the next case is done."""
    import multiprocessing
    import signal
    cases = [c for c in manifest.discover(cohort) if c.name in ("spine", "upper", "liver")]
    _, jobs = runner.plan(cases, tmp_path / "k", FAST)
    done = {}

    def on_start(name, worker):
        if name == "spine":
            for p in multiprocessing.active_children():
                if p.name == "medgs-batch-gpu0":
                    os.kill(p.pid, signal.SIGKILL)
    local.run_per_gpu(jobs, ["0"], on_start, lambda name, outcome: done.setdefault(name, outcome), poll_s=0.1)
    assert [j["name"] for j in jobs] == ["liver", "spine", "upper"]
    assert {n: o["status"] for n, o in done.items()} == {"liver": "done", "spine": "failed", "upper": "done"}
    assert done["spine"]["reason"] == "the worker process on GPU 0 died (exit code -9)"
    assert not (tmp_path / "k" / "spine").exists() and (tmp_path / "k" / "upper" / "run.json").exists()


@pytest.mark.parametrize("env, count, expected", [
    ({}, 0, []),
    ({}, 3, ["0", "1", "2"]),
    ({"CUDA_VISIBLE_DEVICES": ""}, 8, []),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, 8, []),
    ({"CUDA_VISIBLE_DEVICES": "3"}, 8, ["3"]),
    ({"CUDA_VISIBLE_DEVICES": "2, 0,5"}, 8, ["2", "0", "5"]),
    ({"CUDA_VISIBLE_DEVICES": "1,1,2"}, 8, ["1", "2"]),
    ({"CUDA_VISIBLE_DEVICES": "0,-1,1"}, 8, ["0"]),           # CUDA stops at the first invalid entry
    ({"CUDA_VISIBLE_DEVICES": "GPU-8f1e,MIG-2c3d"}, 8, ["GPU-8f1e", "MIG-2c3d"]),
])
def test_visible_gpus(env, count, expected):
    assert local.visible_gpus(env, device_count=count) == expected
    assert local.visible_gpus(env, device_count=lambda: count) == expected


def test_executor_choice_and_ray_message(monkeypatch):
    assert runner.choose_executor("auto", []) == "local"
    assert runner.choose_executor("auto", ["0"]) == "local"           # one GPU: this process
    assert runner.choose_executor("auto", ["0", "1"]) == "gpus"
    assert runner.choose_executor("auto", ["0", "1"], "cpu") == "local"
    assert runner.choose_executor("auto", ["0", "1"], "cuda:1") == "local"
    with pytest.raises(InputError, match="^--executor gpus gives each worker one GPU"):
        runner.choose_executor("gpus", ["0", "1"], "cuda:1")
    with pytest.raises(InputError, match="unknown executor"):
        runner.choose_executor("threads", [])
    import builtins
    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from MedGSLib.batch.ray_executor import import_ray
    with pytest.raises(InputError, match=r"^--executor ray needs Ray, which is not installed: pip install"):
        import_ray()


def test_command_line_pieces():
    import argparse
    ns = argparse.Namespace(factor=2.0, spacing=None, no_meshes=True, overrides=["a.b=1"], seed=0, preset="fast",
                            iterations=None)
    assert option_tokens(ns) == ["--factor", "2.0", "--no-meshes", "--set", "a.b=1"]
    assert case_argv("/d/x.nii", "/d/x_l.nii", "/o/x", ["--factor", "2", "--set", "a.b=1", "c.d=2"],
                     ["--factor", "3", "--set", "e.f=3"]) == [
        "/d/x.nii", "-o", "/o/x", "--labels", "/d/x_l.nii", "--factor", "2", "--factor", "3",
        "--set", "a.b=1", "c.d=2", "e.f=3"]


def test_progress_eta():
    t = [100.0]
    p = CohortProgress(4, clock=lambda: t[0])
    assert p.eta_s() is None
    t[0] = 130.0
    p.case_finished()
    assert p.eta_s() == 90.0 and p.cases_per_minute() == 2.0
    line = p.line("ct", {"status": "done", "seconds": 29.5, "gain_db": 0.8125})
    assert line == "[1/4] ct: done in 29.5 s, estimated gain +0.81 dB | 2.00 cases/min, ETA 0:01:30"
    assert format_duration(3725.4) == "1:02:05"
    p.case_finished(done=False)                       # a broken file fails at once: not in the rate
    assert p.cases_per_minute() == 2.0 and p.eta_s() == 60.0
    assert p.line("bad", {"status": "failed", "seconds": 0.01, "reason": "damaged"}) == \
        "[2/4] bad: failed in 0.0 s: damaged | 2.00 cases/min, ETA 0:01:00"


def test_completeness_needs_every_listed_output(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    assert status.completed_run(d) is None
    (d / "volume.nii.gz").write_bytes(b"x")
    (d / "run.json").write_text(json.dumps({"outputs": {"volume": str(d / "volume.nii.gz"),
                                                        "meshes": {"1": {"path": str(d / "meshes" / "a.vtk")}}},
                                            "result": {}}))
    assert status.completed_run(d) is None           # a listed mesh is missing
    (d / "meshes").mkdir()
    (d / "meshes" / "a.vtk").write_text("x")
    assert status.completed_run(d) is not None
    (d / "run.json").write_text('{"outputs": {"volume": ')  # cut short
    assert status.completed_run(d) is None


def test_batch_errors_are_one_line(tmp_path, capsys):
    code, _, err = _batch([str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"), "--factor", "2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "does not exist: give a folder of volumes or a CSV" in err
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.nii.gz").write_bytes(b"x")
    code, _, err = _batch([str(tmp_path / "v"), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "give --factor K or --spacing MM" in err
    code, _, err = _batch([str(tmp_path / "v"), "-o", str(tmp_path / "o"), "--factor", "-2"], capsys)
    assert code == 2 and "--factor must be a positive number" in err


def test_ctrl_c_on_the_command(cohort, tmp_path):
    """SIGINT to a running `medgs batch`: exit 130, the finished case intact, the one training
    recorded as interrupted with no folder (nor staging folder) left, the last one not run."""
    import signal
    import subprocess
    import sys
    import time
    man = tmp_path / "c.csv"
    man.write_text("image,options\n"
                   f"{cohort / 'upper_image.nii.gz'},\n"
                   f"{cohort / 'spine_image.nii.gz'},--iterations 100000\n"
                   f"{cohort / 'liver_image.nii.gz'},\n")
    out = tmp_path / "b"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "MedGSLib", "batch", str(man), "-o", str(out), *FAST, "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _cases(out)["upper_image"]["status"] == "done":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        time.sleep(0.5)                                # into the second case's training
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # say why: a child started with SIGINT ignored (bit 2 of SigIgn) cannot be stopped by it
            from pathlib import Path
            proc_status = Path(f"/proc/{proc.pid}/status")
            ign = ([ln for ln in proc_status.read_text().splitlines() if ln.startswith("SigIgn")]
                   if proc_status.exists() else [])
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"medgs batch did not stop within 60 s of SIGINT ({ign}); stderr: {err[-1500:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "medgs batch: interrupted"
    cases = _cases(out)
    assert {n: c["status"] for n, c in cases.items()} == {"upper_image": "done", "spine_image": "interrupted",
                                                          "liver_image": "not-run"}
    assert sorted(p.name for p in out.iterdir()) == ["batch.csv", "batch.json", "upper_image"]
    assert status.completed_run(out / "upper_image") is not None


def test_ray_actor_count():
    from MedGSLib.batch.ray_executor import actor_count
    assert actor_count({"CPU": 64.0, "GPU": 8.0}, 1) == (8, 1)       # one long-lived actor per GPU
    assert actor_count({"CPU": 256.0, "GPU": 16.0}, 2) == (16, 1)    # two nodes of 8
    assert actor_count({"CPU": 2.0}, 1) == (1, 0)                    # CPU: one per node
    assert actor_count({"CPU": 8.0}, 3) == (3, 0)
