"""Copy the ../shared/data cases into .dev/data for a GPU box (run here, where SimpleITK is).

    python Testing/Benchmarks/make_gpu_data.py

NIfTI only (the GPU box reads NIfTI through nibabel and has no NRRD reader), each cropped along
its slice axis to the protocol's common length for k = 2, 3, 4: the first (n-1)//12*12+1 slices,
so that `medgs eval --k K` on the copy scores exactly the slices `medgs eval --k 2 3 4` scores on
the original. Geometry is kept (the first slice stays, so the origin does too).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main():
    from MedGSLib.io import read_volume, write_volume
    src, dst = ROOT.parent / "shared" / "data", ROOT / ".dev" / "data"
    dst.mkdir(parents=True, exist_ok=True)
    for image in sorted(src.glob("*_image.*")):
        case = image.name.split("_image.")[0]
        for kind in ("image", "labels"):
            path = next(src.glob(f"{case}_{kind}.*"))
            vol = read_volume(path, kind)
            n = vol.array.shape[0]
            m = (n - 1) // 12 * 12 + 1
            write_volume(dataclasses.replace(vol, array=vol.array[:m].copy()), dst / f"{case}_{kind}.nii.gz",
                         overwrite=True)
            print(f"{case}_{kind}: {n} -> {m} slices")


if __name__ == "__main__":
    main()
