"""A stand-in for `python -m MedGSLib.worker JOB` that the Logic tests start through an
injected runner: `python fake_worker.py MODE JOB_DIR`.

It speaks the same line protocol (MedGSLib/worker_protocol.md) and, in "success" mode, writes
outputs the way the engine's run_to_files does (volume/labels NRRD with the input geometry
and a finer slice spacing along k, one LPS .vtk mesh per label, run.json), using SimpleITK
and nearest-neighbour slice repetition instead of training. The other modes fail on purpose.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def send(event: dict) -> None:
    print(json.dumps(event), flush=True)


def upsample_k(path: Path, out: Path, factor: int) -> "object":
    import numpy as np
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)  # k, j, i
    n = arr.shape[0]
    idx = np.round(np.arange((n - 1) * factor + 1) / factor).astype(int)  # nearest known slice
    up = sitk.GetImageFromArray(arr[idx])
    sp = list(img.GetSpacing())
    sp[2] /= factor
    up.SetSpacing(sp)
    up.SetOrigin(img.GetOrigin())
    up.SetDirection(img.GetDirection())
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(up, str(out))
    return up


def write_box_mesh(labels_img, value: int, path: Path) -> None:
    """The bounding box of one label, as an LPS legacy-VTK surface with Slicer's header."""
    import numpy as np
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(labels_img)
    k, j, i = np.nonzero(arr == value)
    lo, hi = (i.min(), j.min(), k.min()), (i.max(), j.max(), k.max())
    corners = [(x, y, z) for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])]
    pts = [labels_img.TransformContinuousIndexToPhysicalPoint([float(c) for c in p]) for p in corners]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    lines = ["# vtk DataFile Version 4.2", "3D Slicer output. SPACE=LPS", "ASCII", "DATASET POLYDATA",
             f"POINTS {len(pts)} float"]
    lines += [" ".join(f"{c:.6f}" for c in p) for p in pts]
    lines.append(f"POLYGONS {len(quads)} {5 * len(quads)}")
    lines += ["4 " + " ".join(str(v) for v in q) for q in quads]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def success(job_dir: Path, break_mesh: bool = False) -> int:
    job = json.loads((job_dir / "job.json").read_text())
    send({"event": "started", "protocol": 1, "pid": os.getpid(), "job": str(job_dir)})
    factor = int(job["options"]["factor"] or 2)
    out = job_dir / job.get("output_dir", "output")
    for i in range(1, 4):
        send({"event": "progress", "stage": "train", "iteration": i, "total": 3, "loss": 0.5 / i, "psnr": 20.0 + i,
              "eta_s": 3 - i})
    send({"event": "log", "level": "info", "message": "rendering"})
    upsample_k(job_dir / job["input"], out / "volume.nrrd", factor)
    wanted = job["options"]["outputs"]
    # relative to the output folder: the Logic must resolve it
    outputs: dict = {"volume": "volume.nrrd"} if "volume" in wanted else {}
    if job.get("labels"):
        lab = upsample_k(job_dir / job["labels"], out / "labels.nrrd", factor)
        if "labels" in wanted:
            outputs["labels"] = str(out / "labels.nrrd")
    if job.get("labels") and "meshes" in wanted:
        outputs["meshes"] = {}
        for value, info in job.get("label_info", {}).items():
            mesh = out / "meshes" / f"label_{value}.vtk"
            if not break_mesh:
                write_box_mesh(lab, int(value), mesh)
            outputs["meshes"][value] = {"name": f"engine-name-{value}", "color": [0.1, 0.2, 0.3],
                                        "path": str(mesh)}
    (out / "run.json").write_text(json.dumps({"outputs": outputs}))
    send({"event": "result", "outputs": outputs, "run_json": str(out / "run.json"), "elapsed_s": 0.1})
    return 0


def main() -> int:
    mode, job_dir = sys.argv[1], Path(sys.argv[2])
    if mode == "success":
        return success(job_dir)
    if mode == "broken-mesh":
        return success(job_dir, break_mesh=True)
    if mode == "twice-logged":  # as the engine does: each trainer message via its logger and via progress
        for _ in range(2):
            send({"event": "log", "level": "info", "message": "step 100: densify"})
        return success(job_dir)
    send({"event": "started", "protocol": 1, "pid": os.getpid(), "job": str(job_dir)})
    if mode == "crash":
        send({"event": "progress", "stage": "train", "iteration": 1, "total": 100, "loss": 0.3})
        print("Fatal Python error: Segmentation fault", flush=True)
        os._exit(139)
    if mode == "oom":
        send({"event": "error", "kind": "out_of_memory", "message": "CUDA out of memory while rendering.",
              "log": str(job_dir / "worker.log")})
        (job_dir / "worker.log").write_text("Traceback ...\ntorch.OutOfMemoryError\n")
        return 1
    if mode == "hang":
        # A grandchild too, like PythonSlicer -> python-real: Cancel must stop the whole tree.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (job_dir / "child.pid").write_text(str(child.pid))
        i = 0
        while True:
            i += 1
            send({"event": "progress", "stage": "train", "iteration": i, "total": 10**6, "loss": 1.0 / i})
            time.sleep(0.05)
    if mode == "stubborn":
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker stuck in native code ignores SIGTERM
        send({"event": "progress", "stage": "train", "iteration": 1, "total": 10})
        time.sleep(600)
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main())
