"""Issue 15 as tests: nothing half-written, ever (bad options, bad output folders, full disks,
kills, stale outputs, strict job.json, a worker whose caller is gone, resumable training).

Every refusal is checked the same way: the documented exit code, exactly one line on stderr
without a traceback, and the folder around the output byte-for-byte as it was (a file that was
already there untouched, no staging folder left). Tiny inputs (28 x 24 x 5) and a tiny
training configuration keep the file fast; the kills are deterministic (a stand-in hook kills
the process at a chosen point, no timing races).
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

from MedGSLib import outputs, worker  # noqa: E402
from MedGSLib.cli import main  # noqa: E402
from MedGSLib.errors import InputError, OutputError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPACING = (0.8, 0.9, 3.0)
TINY = ["--device", "cpu", "--seed", "0", "-q", "--iterations", "4", "--max-gaussians", "400",
        "--set", "model.num_points=200"]
KEEP = b"a file of the user's, not an output\n"


# ----------------------------------------------------------------------------- helpers


def _image(shape=(5, 24, 28)):
    zz, yy, xx = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    return (400 * np.exp(-((yy - 12) ** 2 + (xx - 10 - zz) ** 2) / 30.0) - 100).astype(np.int16)


def _write(arr, path, spacing=SPACING, vector=False):
    im = sitk.GetImageFromArray(arr, isVector=vector)
    if im.GetDimension() == 3:
        im.SetSpacing(spacing)
    sitk.WriteImage(im, str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    arr = _image()
    labels = (arr > 100).astype(np.uint8)
    labels[:, 2:8, 2:8] = 2
    return {"image": _write(arr, d / "in.nii.gz"), "labels": _write(labels, d / "lab.nii.gz"),
            "one_label": _write((arr > 100).astype(np.uint8), d / "lab1.nii.gz"), "dir": d}


def snapshot(root: Path) -> dict:
    """Every entry under root (hidden ones too) with its bytes: 'as it was' means equal to this."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = p.read_bytes() if p.is_file() else ("dir" if p.is_dir() else "other")
    return out


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err, expected=2, text=None):
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("medgs run: ")
    if text:
        assert text in lines[0], lines[0]


def prepared_folder(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_bytes(KEEP)
    return out


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only=False):
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot mount a tmpfs here: {err}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20)


def remount_read_only(where: Path):
    proc = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


# ----------------------------------------------------------------------------- bad options and folders


@pytest.mark.parametrize("extra, text", [
    (["--factor", "0"], "--factor must be a positive number, got 0"),
    (["--factor", "-2"], "--factor must be a positive number"),
    (["--factor", "nan"], "--factor must be a positive number, got nan"),
    (["--spacing", "0"], "--spacing must be a positive number"),
    (["--factor", "2", "--iterations", "0"], "--iterations must be a positive whole number, got 0"),
    (["--factor", "2", "--iterations", "-5"], "--iterations must be a positive whole number, got -5"),
    (["--factor", "2", "--max-gaussians", "0"], "--max-gaussians must be a positive whole number"),
    (["--keep-every", "0"], "--keep-every must be a positive whole number, got 0"),
    (["--keep-every", "-3"], "--keep-every must be a positive whole number, got -3"),
    # (--set schedule.iterations=0 means "sized from the data", config.cpu_variant)
    (["--factor", "2", "--set", "schedule.iterations=-1"], "iterations must be a positive whole number"),
    (["--factor", "2", "--max-output-gb", "0"], "--max-output-gb must be a positive number"),
    (["--factor", "2", "--checkpoint-every", "-1"], "--checkpoint-every must be 0 or a positive"),
    (["--factor", "0.5"], "sparser than the input"),
    (["--factor", "abc"], "invalid float value: 'abc'"),
    (["--factor", "2", "--bogus"], "unrecognized arguments: --bogus"),
    (["--factor", "1e6", "--max-output-gb", "0.5"], "would make 4,000,001 slices of 24 x 28"),
    (["--spacing", "1e-9"], "above the 4 GB limit (raise it with --max-output-gb)"),
])
def test_bad_options_one_line_and_nothing_written(tmp_path, capsys, data, extra, text):
    out = prepared_folder(tmp_path)
    before = snapshot(tmp_path)
    try:
        code, _, err = run_cli(["run", data["image"], "-o", out] + TINY + extra, capsys)
    except SystemExit as exc:            # argparse's own errors: one line too, exit 2
        code, err = exc.code, capsys.readouterr().err
        assert err.startswith("medgs") and ": error: " in err, err
        err = "medgs run: " + err.split(": ", 1)[1]
    assert_one_line(code, err, 2, text)
    assert snapshot(tmp_path) == before


def test_factor_10000_is_refused_with_the_size_it_would_have(tmp_path, capsys):
    """The issue's `--factor 10000`, on a 256 x 256 plane: 40 001 slices, 5.2 GB > the 4 GB default."""
    src = _write(np.zeros((5, 256, 256), np.int16), tmp_path / "plane.nii.gz")
    out = prepared_folder(tmp_path)
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    code, _, err = run_cli(["run", src, "-o", out, "--factor", "10000"] + TINY, capsys)
    assert_one_line(code, err, 2, "factor 10000 would make 40,001 slices of 256 x 256: 5.24 GB of output, "
                                  "above the 4 GB limit (raise it with --max-output-gb)")
    assert time.monotonic() - t0 < 10          # refused before any training
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["existing_file", "below_a_file", "proc"])
def test_output_paths_that_cannot_be_folders(tmp_path, capsys, data, case):
    f = tmp_path / "a_file.txt"
    f.write_bytes(KEEP)
    target = {"existing_file": f, "below_a_file": f / "sub", "proc": Path("/proc/medgs-out/sub")}[case]
    text = {"existing_file": "is an existing file; give a folder name", "below_a_file": "is a file, not a folder",
            "proc": "cannot write into /proc"}[case]
    before = snapshot(tmp_path)
    code, _, err = run_cli(["run", data["image"], "-o", target, "--factor", "2"] + TINY, capsys)
    assert_one_line(code, err, 2, text)
    assert snapshot(tmp_path) == before
    assert not Path("/proc/medgs-out").exists()


def test_new_subfolder_on_a_read_only_mount(tmp_path, capsys, data):
    with tmpfs(tmp_path / "ro", "1m") as mnt:
        (mnt / "keep.txt").write_bytes(KEEP)
        remount_read_only(mnt)
        before = snapshot(mnt)
        code, _, err = run_cli(["run", data["image"], "-o", mnt / "new" / "out", "--factor", "2"] + TINY, capsys)
        assert_one_line(code, err, 2, "Read-only file system")
        assert snapshot(mnt) == before


# ----------------------------------------------------------------------------- inputs already refused


def _bad_inputs(d: Path) -> dict:
    arr = _image()
    cases = {}
    cases["2d"] = (_write(arr[0], d / "flat.nrrd"), None, "is 2D")
    cases["4d"] = (_write(np.stack([arr, arr]), d / "time.nrrd"), None, "is 4D")
    nan = arr.astype(np.float32)
    nan[1, 2, 3] = np.nan
    cases["nan"] = (_write(nan, d / "nan.nii"), None, "NaN or infinite")
    raw = _write(arr, d / "trunc.nii").read_bytes()
    (d / "trunc.nii").write_bytes(raw[: len(raw) // 2])
    cases["truncated_nifti"] = (d / "trunc.nii", None, "truncated")
    gz = _write(arr, d / "trunc.nrrd").read_bytes()
    (d / "trunc.nrrd").write_bytes(gz[: len(gz) - 200])
    cases["truncated_nrrd"] = (d / "trunc.nrrd", None, "trunc.nrrd")
    (d / "broken.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 28 24\nencoding: raw\n\n" + b"\0" * 64)
    cases["broken_nrrd_header"] = (d / "broken.nrrd", None, "broken.nrrd")
    cases["vector"] = (_write(np.stack([arr] * 3, -1), d / "rgb.nrrd", vector=True), None, "values per voxel")
    cases["label_geometry"] = (None, _write((arr > 100).astype(np.uint8)[:, :20], d / "small_lab.nii.gz"),
                               "grid")
    cases["empty_labels"] = (None, _write(np.zeros_like(arr, np.uint8), d / "empty_lab.nii.gz"), "empty")
    return cases


BAD_INPUTS = ["2d", "4d", "nan", "truncated_nifti", "truncated_nrrd", "broken_nrrd_header", "vector",
              "label_geometry", "empty_labels"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_one_line_and_nothing_written(tmp_path, capsys, data, case):
    image, labels, text = _bad_inputs(tmp_path)[case]
    image = image if image is not None else data["image"]
    (tmp_path / "o").mkdir()
    out = prepared_folder(tmp_path / "o")
    before = snapshot(tmp_path)
    argv = ["run", image, "-o", out, "--factor", "2"] + TINY + (["--labels", labels] if labels else [])
    code, _, err = run_cli(argv, capsys)
    assert_one_line(code, err, 2)
    assert text.lower() in err.lower(), err
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("free", ["200k", "40k", "4k"])
def test_full_disk_is_refused_before_writing(tmp_path, capsys, data, free):
    with tmpfs(tmp_path / "disk", free) as disk:
        out = prepared_folder(disk)
        before = snapshot(disk)
        code, _, err = run_cli(["run", data["image"], "--labels", data["labels"], "-o", out, "--factor", "2",
                                "--overwrite"] + TINY, capsys)
        assert_one_line(code, err, 2, "not enough free space for the outputs")
        assert snapshot(disk) == before


@pytest.mark.parametrize("size", ["200k", "40k", "0"])
def test_disk_filling_up_while_writing_leaves_the_folder_as_it_was(tmp_path, capsys, data, monkeypatch, size):
    """The estimate is beaten (something else fills the disk meanwhile): the write itself fails
    with ENOSPC, and still: one line, the folder as it was, no staging folder left."""
    monkeypatch.setattr(outputs.OutputSet, "check_space", lambda self, nbytes, what="": None)
    with tmpfs(tmp_path / "disk", "8k" if size == "0" else size) as disk:
        out = prepared_folder(disk)
        if size == "0":
            with contextlib.suppress(OSError), open(disk / "filler.bin", "wb") as fh:
                for _ in range(64):
                    fh.write(b"\1" * 1024)
                    fh.flush()
        image, labels = data["image"], data["labels"]
        if size == "200k":      # outputs that cannot fit: a noisy 64 x 64 image (incompressible)
            rng = np.random.default_rng(0)
            image = _write(rng.integers(-1000, 1000, (5, 64, 64)).astype(np.int16), tmp_path / "noise.nii.gz")
            lab = np.zeros((5, 64, 64), np.uint8)
            lab[:, 10:40, 10:40] = 1
            lab[:, 45:60, 5:30] = 2
            labels = _write(lab, tmp_path / "noise_lab.nii.gz")
        before = snapshot(disk)
        code, _, err = run_cli(["run", image, "--labels", labels, "-o", out, "--factor", "2",
                                "--probabilities", "--mesh-format", "obj"] + TINY, capsys)
        assert_one_line(code, err, 2, "No space left on device")
        assert snapshot(disk) == before


# ----------------------------------------------------------------------------- sets, overwrite, kills


def test_overwrite_replaces_the_whole_previous_set(tmp_path, capsys, data):
    out = prepared_folder(tmp_path)
    code, _, err = run_cli(["run", data["image"], "--labels", data["labels"], "-o", out, "--factor", "2",
                            "--probabilities"] + TINY, capsys)
    assert code == 0, err
    assert sorted(os.listdir(out / "meshes")) == ["label_1.vtk", "label_2.vtk"]
    assert sorted(os.listdir(out / "probabilities")) == ["label_1.nii.gz", "label_2.nii.gz"]
    code, _, err = run_cli(["run", data["image"], "--labels", data["one_label"], "-o", out, "--factor", "2",
                            "--overwrite"] + TINY, capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["keep.txt", "labels.nii.gz", "meshes", "run.json", "volume.nii.gz"]
    assert os.listdir(out / "meshes") == ["label_1.vtk"]
    assert (out / "keep.txt").read_bytes() == KEEP
    assert sorted(os.listdir(tmp_path)) == ["out"]          # no staging or previous folder left
    rec = json.loads((out / "run.json").read_text())
    assert set(rec["outputs"]["meshes"]) == {"1"}
    assert rec["outputs"]["volume"] == str(out / "volume.nii.gz")


def test_without_overwrite_an_earlier_set_is_refused(tmp_path, capsys, data):
    out = prepared_folder(tmp_path)
    assert run_cli(["run", data["image"], "-o", out, "--factor", "2"] + TINY, capsys)[0] == 0
    before = snapshot(tmp_path)
    code, _, err = run_cli(["run", data["image"], "-o", out, "--factor", "2"] + TINY, capsys)
    assert_one_line(code, err, 2, "already exists; pass --overwrite")
    assert snapshot(tmp_path) == before


def test_sigterm_while_writing_leaves_nothing(tmp_path, capsys, data, monkeypatch):
    from MedGSLib import io
    real = io.write_volume

    def write_then_sigterm(*a, **k):
        path = real(*a, **k)
        os.kill(os.getpid(), signal.SIGTERM)      # handled by the CLI as the next bytecode runs
        time.sleep(0.5)
        return path

    monkeypatch.setattr(io, "write_volume", write_then_sigterm)
    out = prepared_folder(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_cli(["run", data["image"], "-o", out, "--factor", "2"] + TINY, capsys)
    assert code == 143 and err.strip() == "medgs run: stopped by SIGTERM"
    assert snapshot(tmp_path) == before


def test_leftovers_of_killed_runs_are_cleaned(tmp_path, capsys, data):
    out = prepared_folder(tmp_path)
    pid = dead_pid()
    stale = [out / f"volume.tmp-{pid}.nii.gz", tmp_path / f".out.{outputs.STAGING_TAG}-{pid}"]
    stale[0].write_bytes(b"half a volume")
    stale[1].mkdir()
    (stale[1] / "volume.nii.gz").write_bytes(b"an unfinished set")
    alive = tmp_path / f".out.{outputs.STAGING_TAG}-{os.getppid()}"      # a running process's: kept
    alive.mkdir()
    code, _, err = run_cli(["run", data["image"], "-o", out, "--factor", "2"] + TINY, capsys)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and alive.exists()
    assert sorted(os.listdir(out)) == ["keep.txt", "run.json", "volume.nii.gz"]


def test_kill_between_the_two_renames_is_rolled_back(tmp_path):
    """Without RENAME_EXCHANGE a kill can fall between `OUTDIR -> previous` and `staging -> OUTDIR`."""
    pid = dead_pid()
    previous = tmp_path / f".out.{outputs.PREVIOUS_TAG}-{pid}"
    previous.mkdir()
    (previous / "run.json").write_text("{}")
    staging = tmp_path / f".out.{outputs.STAGING_TAG}-{pid}"
    staging.mkdir()
    with pytest.raises(Exception, match="already exists"):
        outputs.OutputSet(tmp_path / "out").prepare(["run.json"])      # the old set is back, so: a clash
    assert sorted(os.listdir(tmp_path)) == ["out"] and (tmp_path / "out" / "run.json").read_text() == "{}"


def test_sets_commit_with_two_renames_where_there_is_no_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = prepared_folder(tmp_path)
    (out / "run.json").write_text("old")
    s = outputs.OutputSet(out, overwrite=True).prepare(["run.json"])
    with s.writing() as stage:
        (stage / "run.json").write_text("new")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert (out / "run.json").read_text() == "new" and (out / "keep.txt").read_bytes() == KEEP


@pytest.mark.parametrize("where", ["cwd", "mount_point"])
def test_outdir_that_cannot_be_swapped_gets_its_entries_moved_in(tmp_path, monkeypatch, where):
    """`-o .` (the shell would be left in the deleted old folder) and a mount point (no rename
    across file systems): the set is staged inside OUTDIR and moved in entry by entry."""
    ctx = tmpfs(tmp_path / "disk", "1m") if where == "mount_point" else contextlib.nullcontext(tmp_path / "o")
    with ctx as out:
        out.mkdir(exist_ok=True)
        (out / "keep.txt").write_bytes(KEEP)
        (out / "meshes").mkdir()
        (out / "meshes" / "old.vtk").write_text("stale")
        (out / "run.json").write_text("old")
        if where == "cwd":
            monkeypatch.chdir(out)
        s = outputs.OutputSet(out, overwrite=True).prepare(["run.json", "meshes"])
        with s.writing() as stage:
            assert stage.parent == out
            (stage / "meshes").mkdir()
            (stage / "meshes" / "new.vtk").write_text("new")
            (stage / "run.json").write_text("new")
        assert sorted(os.listdir(out)) == ["keep.txt", "meshes", "run.json"]
        assert os.listdir(out / "meshes") == ["new.vtk"] and (out / "run.json").read_text() == "new"


KILL_WHILE_WRITING = """
import os, signal, sys
from pathlib import Path
from MedGSLib import io
real = io.write_volume
def write_then_die(volume, path, **kw):
    real(volume, path, **kw)
    if Path(path).name.startswith("labels"):          # the volume and labels are staged: die now
        os.kill(os.getpid(), signal.SIGKILL)
    return path
io.write_volume = write_then_die
from MedGSLib.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_writing_keeps_the_previous_outputs(tmp_path, capsys, data):
    out = prepared_folder(tmp_path)
    assert run_cli(["run", data["image"], "--labels", data["labels"], "-o", out, "--factor", "2"] + TINY,
                   capsys)[0] == 0
    before = snapshot(out)
    argv = ["run", data["image"], "--labels", data["one_label"], "-o", out, "--factor", "3", "--overwrite"] + TINY
    proc = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING] + [str(a) for a in argv], env=env(),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert snapshot(out) == before                         # the previous set, whole
    assert any(outputs.STAGING_TAG in n for n in os.listdir(tmp_path))   # the dead run's staging folder
    code, _, err = run_cli(argv, capsys)                    # the next run cleans it and replaces the set
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert os.listdir(out / "meshes") == ["label_1.vtk"]
    assert sitk.ReadImage(str(out / "volume.nii.gz")).GetSize()[2] == 13


# ----------------------------------------------------------------------------- resume


KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from MedGSLib import checkpoints
real = checkpoints.Checkpointing.save
def save_then_die(self, trainer, loop):
    real(self, trainer, loop)
    if trainer.step == 6:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoints.Checkpointing.save = save_then_die
from MedGSLib.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_equals_a_straight_run(tmp_path, capsys, data):
    train = ["--device", "cpu", "--seed", "0", "-q", "--iterations", "12", "--max-gaussians", "400",
             "--set", "model.num_points=200", "--checkpoint-every", "3"]
    base = ["run", data["image"], "--labels", data["labels"], "--factor", "2"] + train
    straight = tmp_path / "straight"
    assert run_cli(base + ["-o", straight], capsys)[0] == 0
    assert not (tmp_path / ".straight.medgs-checkpoint.pth").exists()   # removed once the set is in place
    out = tmp_path / "resumed"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_CHECKPOINT] + [str(a) for a in base + ["-o", out]],
                          env=env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpt = tmp_path / ".resumed.medgs-checkpoint.pth"
    assert ckpt.exists() and not out.exists()
    code, _, err = run_cli(base + ["-o", out, "--resume"], capsys)
    assert code == 0, err
    assert not ckpt.exists()
    rec = json.loads((out / "run.json").read_text())
    assert rec["result"]["resumed_from_step"] == 6 and rec["result"]["iterations_run"] == 12
    for name in ("volume.nii.gz", "labels.nii.gz"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(straight / name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / name)))
        np.testing.assert_array_equal(a, b)
    assert (straight / "meshes" / "label_1.vtk").read_bytes() == (out / "meshes" / "label_1.vtk").read_bytes()


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys, data):
    from MedGSLib.io import save_torch
    save_torch({"format": "medgs-resume-1", "fingerprint": {"factor": 3.0}}, tmp_path / ".out.medgs-checkpoint.pth")
    before = snapshot(tmp_path)
    code, _, err = run_cli(["run", data["image"], "-o", tmp_path / "out", "--factor", "2", "--resume"] + TINY, capsys)
    assert_one_line(code, err, 2, "belongs to another run")
    assert snapshot(tmp_path) == before


def test_crafted_checkpoint_is_refused_not_executed(tmp_path):
    from MedGSLib.io import load_torch
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import torch
    torch.save({"model": Evil()}, tmp_path / "chkpnt7.pth", pickle_module=pickle)
    with pytest.raises(InputError, match="cannot be loaded as MedGS data"):
        load_torch(tmp_path / "chkpnt7.pth")
    assert not marker.exists()


# ----------------------------------------------------------------------------- worker


class _Lines:
    def __init__(self):
        self.lines = []

    def write(self, s):
        self.lines += [json.loads(x) for x in s.splitlines() if x]

    def flush(self):
        pass


def _run_job(job_dir: Path) -> tuple[int, list[dict]]:
    stream = _Lines()
    writer = worker.ProtocolWriter(stream)
    code = worker.run_job(job_dir, writer, worker.CancelFlag(job_dir / "cancel"))
    return code, stream.lines


def _job(tmp_path, data, **extra) -> Path:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    job = {"version": 1, "input": str(data["image"]), "labels": None, "output_dir": "output",
           "options": {"factor": 2.0, "device": "cpu", "outputs": ["volume"]}, "iterations": 2,
           "config": {"model": {"num_points": 200, "max_gaussians": 400}}}
    for k, v in extra.items():
        if k == "options":
            job["options"].update(v)
        else:
            job[k] = v
    (job_dir / "job.json").write_text(json.dumps(job))
    return job_dir


@pytest.mark.parametrize("extra, text", [
    ({"config": {"loss": {"ibrf": 1.0}}}, "'loss.ibrf'"),
    ({"config": {"loss": {"ibfr": "lots"}}}, "'loss.ibfr'"),
    ({"config": {"loss": 3}}, "config section 'loss'"),
    ({"options": {"outputs": "volume"}}, "'outputs' must be a list"),
    ({"options": {"overwrite": "no"}}, "'overwrite' must be true or false, got \"no\""),
    ({"iterations": True}, "'iterations' must be a whole number or null, got true"),
    ({"options": {"factor": 0}}, "option 'factor' must be positive"),
    ({"options": {"keep_every": -3}}, "option 'keep_every' must be at least 1"),
    ({"options": {"factr": 2}}, "unknown option(s) ['factr']"),
    ({"outputdir": "x"}, "unknown key(s) ['outputdir']"),
    ({"annotated_slices": "some"}, "'annotated_slices' must be"),
    ({"labels": 3}, "'labels' must be a string or null, got 3"),
])
def test_job_json_strict(tmp_path, data, extra, text):
    job_dir = _job(tmp_path, data, **extra)
    code, events = _run_job(job_dir)
    assert code == worker.EXIT_BAD_JOB
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "job"
    assert text in events[-1]["message"], events[-1]["message"]
    assert not (job_dir / "output").exists()


def test_job_json_accepts_annotated_slices_and_factor_1(tmp_path, data):
    job = worker.read_job(_job(tmp_path, data, annotated_slices=[0, 2, 4], options={"factor": 1}))
    assert job["options"]["annotated_slices"] == [0, 2, 4] and job["options"]["factor"] == 1
    assert worker.build_config(job).model.num_points == 200


@pytest.mark.parametrize("case", ["output_is_a_file", "full_disk"])
def test_worker_output_errors_are_the_users(tmp_path, data, case, monkeypatch):
    if case == "output_is_a_file":
        job_dir = _job(tmp_path, data)
        (job_dir / "output").write_bytes(KEEP)
        code, events = _run_job(job_dir)
        assert (job_dir / "output").read_bytes() == KEEP
    else:
        monkeypatch.setattr(outputs, "SPACE_MARGIN_BYTES", 10 ** 15)
        job_dir = _job(tmp_path, data)
        code, events = _run_job(job_dir)
        assert not (job_dir / "output").exists()
    assert code == worker.EXIT_ERROR
    assert events[-1]["kind"] == "output", events


def test_worker_in_a_read_only_job_folder_sends_one_error_line(tmp_path, data):
    with tmpfs(tmp_path / "ro", "1m") as mnt:
        job_dir = mnt / "job"
        job_dir.mkdir()
        (job_dir / "job.json").write_text(json.dumps({"version": 1, "input": str(data["image"]),
                                                      "options": {"factor": 2.0, "device": "cpu"}}))
        remount_read_only(mnt)
        proc = subprocess.run([sys.executable, "-m", "MedGSLib.worker", str(job_dir)], capture_output=True,
                              text=True, timeout=120, cwd=REPO, env=env())
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    assert proc.returncode == worker.EXIT_ERROR and proc.stderr == ""
    assert [e["event"] for e in events] == ["started", "error"]
    assert events[-1]["kind"] == "output" and "Read-only file system" in events[-1]["message"]
    assert events[-1]["log"] != str(job_dir / "worker.log")     # the log went to a temporary file


SLOW_WORKER = """
import sys, time, types
import MedGSLib
from MedGSLib import errors
api = types.ModuleType("MedGSLib.api")
def run_to_files(input_path, out_dir, **kw):
    while True:
        if kw["cancel"]():
            raise errors.CancelledError("cancelled")
        kw["progress"]({"event": "progress", "stage": "train", "iteration": 0, "total": 1})
        time.sleep(0.05)
api.run_to_files = run_to_files
sys.modules["MedGSLib.api"] = api
MedGSLib.api = api
from MedGSLib.worker import main
sys.exit(main([sys.argv[1]]))
"""

PARENT = """
import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=open(sys.argv[3], "w"))
print(p.pid, flush=True)
time.sleep(600)
"""


def _slow_job(tmp_path) -> Path:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "job.json").write_text(json.dumps({"version": 1, "input": "v.nrrd", "cancel_grace_s": 5}))
    return job_dir


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        time.sleep(0.1)
    return False


def test_worker_stops_when_its_parent_is_killed(tmp_path):
    job_dir = _slow_job(tmp_path)
    protocol = tmp_path / "protocol.jsonl"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, SLOW_WORKER, str(job_dir), str(protocol)],
                              stdout=subprocess.PIPE, text=True, env=env(), cwd=REPO)
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while '"progress"' not in (protocol.read_text() if protocol.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    parent.kill()
    parent.wait()
    assert _wait_gone(child, 15), "the worker went on without its caller"
    events = [json.loads(x) for x in protocol.read_text().splitlines()]
    assert events[-1]["kind"] == "cancelled" and "calling process is gone" in events[-1]["message"]


def test_worker_stops_when_its_pipe_is_closed(tmp_path):
    job_dir = _slow_job(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WORKER, str(job_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env(), cwd=REPO)
    proc.stdout.readline()            # started
    proc.stdout.close()               # the caller stops reading
    assert proc.wait(timeout=15) == worker.EXIT_CANCELLED
    assert "caller closed the output pipe" in (job_dir / "worker.log").read_text()


def test_worker_sends_each_engine_log_line_once():
    stream = _Lines()
    writer = worker.ProtocolWriter(stream)
    import logging
    handler = worker._ForwardLogs(writer)
    lg = logging.getLogger("MedGSLib.train")
    lg.addHandler(handler)
    old = lg.level
    lg.setLevel(logging.INFO)
    try:
        from MedGSLib.train import Trainer
        fake = type("T", (), {"progress": writer.send})()
        Trainer._emit_log(fake, "step 10: densify {'clone': 3}")      # logs and sends the event
    finally:
        lg.removeHandler(handler)
        lg.setLevel(old)
    assert stream.lines == [{"event": "log", "level": "info", "message": "step 10: densify {'clone': 3}"}]


def test_run_json_is_strict_json_with_nan_as_null(tmp_path):
    from MedGSLib.io import write_json
    p = write_json({"psnr": float("nan"), "eta": float("inf"), "n": np.int64(3), "t": (1, 2)}, tmp_path / "r.json")
    assert json.loads(p.read_text()) == {"psnr": None, "eta": None, "n": 3, "t": [1, 2]}
    assert "NaN" not in p.read_text()
    with pytest.raises(OutputError):
        write_json({}, Path("/proc/medgs-r.json"))
