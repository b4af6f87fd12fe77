"""`medgs mesh`: surface meshes from a label map / probability map, or from upstream PNG renders.

Two modes of one sub-command:
  medgs mesh LABELMAP_OR_PROB -o OUTDIR [--format vtk] [--level 0.5] [--smooth 10] [--decimate 0]
      one mesh per label value, in physical LPS millimetres, named after the label
      (or one mesh at --level for a probability map with values in [0, 1]);
  medgs mesh --input ROOT --output OUTDIR [--thresh 0] [--inter 8] [--nifti DIR]
      the upstream slices_to_ply.py: every ROOT/<case>/render_mask (or render) PNG folder
      becomes OUTDIR/<case>.ply.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError, MedGSError

_PNG_FOLDERS = ("render_mask", "render")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `mesh` sub-command to an argparse sub-parser set; sets func=main_mesh."""
    p = subparsers.add_parser(
        "mesh",
        help="surface meshes from a label map, a probability map or upstream PNG renders",
        description=(
            "Build surface meshes. Give a label map (or probability map) file to mesh every label "
            "in physical LPS millimetres, or --input ROOT to run the upstream slices_to_ply on "
            "ROOT/<case>/render_mask PNG folders."
        ),
    )
    p.add_argument("volume", nargs="?", metavar="LABELMAP_OR_PROB",
                   help="label map (.nii/.nii.gz/.nrrd/.seg.nrrd/.mha) or probability map in [0, 1]")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="[REQUIRED] output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing mesh files")

    g = p.add_argument_group("label map mode")
    g.add_argument("--format", choices=("ply", "stl", "vtk", "obj"), default="vtk",
                   help="mesh file format (default: %(default)s)")
    g.add_argument("--level", type=float, default=0.5,
                   help="iso-level on each label's 0/1 mask or the probability (default: %(default)s)")
    g.add_argument("--smooth", type=int, default=10, metavar="N",
                   help="windowed-sinc smoothing iterations, 0 = off (default: %(default)s)")
    g.add_argument("--pass-band", type=float, default=0.1,
                   help="smoothing pass band, smaller = smoother (default: %(default)s)")
    g.add_argument("--decimate", type=float, default=0.0, metavar="F",
                   help="fraction of triangles to remove, 0..1 (default: %(default)s = off)")
    g.add_argument("--labels", default=None, metavar="V,V,...",
                   help="only these label values, e.g. 1,5,40-42 (default: all)")
    g.add_argument("--color-table", default=None, metavar="FILE",
                   help="Slicer/FreeSurfer colour table for label names and colours")
    g.add_argument("--probability", action="store_true",
                   help="treat the input as a probability map even if it holds whole numbers")
    g.add_argument("--coordinate-system", choices=("LPS", "RAS"), default="LPS",
                   help="coordinates written to the files, tagged SPACE=... for Slicer (default: %(default)s)")

    u = p.add_argument_group("upstream PNG mode (slices_to_ply.py)")
    u.add_argument("-i", "--input", default=None, metavar="ROOT",
                   help="folder of case folders, each with render_mask/ (or render/) PNG frames")
    u.add_argument("--thresh", type=float, default=0.0,
                   help="threshold on the 0..255 scale; <= 0 = Otsu (default: %(default)s)")
    u.add_argument("--inter", type=int, default=8,
                   help="interpolation factor the frames were rendered with (default: %(default)s)")
    u.add_argument("-n", "--nifti", default=None, metavar="DIR",
                   help="folder with <case>.nii.gz giving the voxel spacing (else a *.nii* in the case folder)")
    p.set_defaults(func=main_mesh)
    return p


def main_mesh(args: argparse.Namespace) -> int:
    try:
        if (args.volume is None) == (args.input is None):
            raise InputError("give either a label map file or --input ROOT (upstream PNG mode), not both or neither")
        if args.input is not None:
            return _png_mode(args)
        return _volume_mode(args)
    except MedGSError as err:
        print(f"medgs mesh: error: {err}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------


def _volume_mode(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import io
    from .. import labels as label_utils
    from .. import mesh as mesh_utils

    options = mesh_utils.MeshOptions(
        format=args.format,
        level=args.level,
        smoothing_iterations=args.smooth,
        pass_band=args.pass_band,
        decimate=args.decimate,
        coordinate_system=args.coordinate_system,
    )
    volume = None
    if not args.probability:
        try:
            volume = io.read_volume(args.volume, kind="labels")
        except InputError:
            # not a label map (e.g. fractional values): read it as an image and check below
            volume = None
    if volume is None:
        image = io.read_volume(args.volume, kind="image")
        arr = np.asarray(image.array, dtype=np.float32)
        if arr.min() < 0 or arr.max() > 1:
            raise InputError(
                f"{Path(args.volume).name} is neither a label map nor a probability map "
                f"(values {arr.min():g}..{arr.max():g}, expected whole numbers or 0..1)"
            )
        name = _strip_ext(Path(args.volume).name)
        m = mesh_utils.surface_from_probability(
            arr, image.geometry, level=options.level, smoothing_iterations=options.smoothing_iterations,
            pass_band=options.pass_band, decimate=options.decimate, label_value=1, label_name=name,
        )
        if m is None:
            raise InputError(f"{Path(args.volume).name} has no surface at level {options.level:g}")
        meshes = [m]
    else:
        values = None
        if args.labels:
            values = [int(v) for v in label_utils.parse_slice_list(args.labels)]
            missing = sorted(set(values) - set(label_utils.label_values(volume.array)))
            if missing:
                raise InputError(f"label values {missing} are not in {Path(args.volume).name}")
        table = label_utils.label_table(volume, args.color_table)
        meshes = mesh_utils.surfaces_from_labels(volume, values=values, table=table, options=options)
        if not meshes:
            raise InputError(f"{Path(args.volume).name} has no label to mesh")
    paths = mesh_utils.write_label_meshes(meshes, args.output, options=options, overwrite=args.overwrite)
    for m, path in zip(meshes, paths):
        print(f"{path}\t{m.n_vertices} vertices\t{m.n_faces} triangles")
    return 0


def _strip_ext(name: str) -> str:
    from ..io import volume_stem   # one rule for volume extensions
    return volume_stem(name)


def _png_mode(args: argparse.Namespace) -> int:
    from .. import mesh as mesh_utils

    root = Path(args.input)
    if not root.is_dir():
        raise InputError(f"--input {root} is not a folder")
    cases = []
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        folder = next((case / f for f in _PNG_FOLDERS if (case / f).is_dir()), None)
        if folder is not None:
            cases.append((case, folder))
    if not cases:
        raise InputError(f"no case folder in {root} has a render_mask/ or render/ folder of PNG frames")
    out = Path(args.output)
    opts = mesh_utils.PngMeshOptions(thresh=args.thresh, inter=args.inter)
    for case, folder in cases:
        spacing = None
        nifti = _find_nifti(case, args.nifti)
        if nifti is not None:
            spacing = mesh_utils.nifti_zooms(nifti)
        m = mesh_utils.mesh_from_png_slices(folder, spacing=spacing, options=opts)
        m.label_name = case.name
        path = mesh_utils.write_mesh(m, out / f"{case.name}.ply", coordinate_system=None, overwrite=args.overwrite)
        print(f"{path}\t{m.n_vertices} vertices\t{m.n_faces} triangles\tspacing {spacing or (1.0, 1.0, 1.0)}")
    return 0


def _find_nifti(case: Path, nifti_dir: str | None) -> Path | None:
    if nifti_dir:
        for ext in (".nii.gz", ".nii"):
            p = Path(nifti_dir) / f"{case.name}{ext}"
            if p.is_file():
                return p
    found = sorted(case.glob("*.nii*"))
    return found[0] if found else None
