"""Surface meshes in physical (LPS) millimetres: marching cubes, smoothing, decimation, files.

Vertices are computed in continuous voxel indices and mapped with the volume's full
index->LPS affine (spacing, direction, origin), so oblique and anisotropic grids come out
right. Files carry Slicer's coordinate tag ("SPACE=LPS" in the VTK header line, the STL
solid name, a PLY comment, an OBJ comment), which is how Slicer decides LPS vs RAS on load.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, OutputExistsError
from .geometry import Geometry, LabelInfo, Volume, flip_lps_ras

MESH_FORMATS = ("ply", "stl", "vtk", "obj")


@dataclass
class Mesh:
    """A triangle mesh. vertices (N, 3) float64 LPS mm, faces (M, 3) int64, normals (N, 3) or None."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    label_value: int | None = None
    label_name: str | None = None
    color: tuple[float, float, float] | None = None

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        if self.normals is not None:
            self.normals = np.asarray(self.normals, dtype=np.float64).reshape(-1, 3)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])


@dataclass
class MeshOptions:
    """How label surfaces are built and written (used by the pipeline and `medgs mesh`).

    level: iso-value on the per-label probability (0.5 = the decode threshold).
    smoothing_iterations: vtkWindowedSincPolyDataFilter iterations (0 = off).
    pass_band: its pass band; smaller = smoother (0.1 keeps shape, removes voxel steps).
    decimate: fraction of triangles to remove (0 = off, 0.5 = halve).
    """

    enabled: bool = True
    format: str = "vtk"
    level: float = 0.5
    smoothing_iterations: int = 10
    pass_band: float = 0.1
    decimate: float = 0.0
    coordinate_system: str = "LPS"

    def __post_init__(self):
        self.format = str(self.format).lower().lstrip(".")
        if self.format not in MESH_FORMATS:
            raise InputError(f"mesh format must be one of {', '.join(MESH_FORMATS)}, got {self.format!r}")
        if not 0.0 <= float(self.decimate) < 1.0:
            raise InputError(f"mesh decimation must be in [0, 1), got {self.decimate}")
        if int(self.smoothing_iterations) < 0:
            raise InputError(f"mesh smoothing iterations must be >= 0, got {self.smoothing_iterations}")
        if not 0.0 < float(self.pass_band) <= 2.0:
            raise InputError(f"mesh smoothing pass band must be in (0, 2], got {self.pass_band}")
        if str(self.coordinate_system).upper() not in ("LPS", "RAS"):
            raise InputError(f"mesh coordinate system must be LPS or RAS, got {self.coordinate_system!r}")
        self.coordinate_system = str(self.coordinate_system).upper()


# ---------------------------------------------------------------------------------------------
# geometry helpers


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals: area-weighted mean of the adjacent face normals (right-hand winding)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    n = np.zeros_like(v)
    if f.size:
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
        for c in range(3):
            np.add.at(n, f[:, c], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def signed_volume(mesh: Mesh) -> float:
    """Enclosed volume in mm^3 (divergence theorem); positive when the faces wind outward."""
    v, f = mesh.vertices, mesh.faces
    if f.size == 0:
        return 0.0
    # centre first so the sum does not lose precision far from the origin
    c = v.mean(axis=0)
    a, b, d = v[f[:, 0]] - c, v[f[:, 1]] - c, v[f[:, 2]] - c
    return float(np.einsum("ij,ij->i", a, np.cross(b, d)).sum() / 6.0)


def surface_area(mesh: Mesh) -> float:
    v, f = mesh.vertices, mesh.faces
    if f.size == 0:
        return 0.0
    return float(0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum())


# ---------------------------------------------------------------------------------------------
# VTK round trips (imported lazily: vtk is heavy and optional on a GPU box)


def _to_polydata(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None):
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray

    pts = vtk.vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(vertices, dtype=np.float64), deep=True))
    cells = vtk.vtkCellArray()
    conn = numpy_to_vtkIdTypeArray(np.ascontiguousarray(faces, dtype=np.int64).ravel(), deep=True)
    cells.SetData(3, conn)
    pd = vtk.vtkPolyData()
    pd.SetPoints(pts)
    pd.SetPolys(cells)
    if normals is not None:
        arr = numpy_to_vtk(np.ascontiguousarray(normals, dtype=np.float32), deep=True)
        arr.SetName("Normals")
        pd.GetPointData().SetNormals(arr)
    return pd


def _from_polydata(pd) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, triangle faces) of a vtkPolyData; polygons are triangulated first."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    if pd.GetNumberOfPoints() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    polys = pd.GetPolys()
    offsets = vtk_to_numpy(polys.GetOffsetsArray())
    if offsets.size > 1 and not np.all(np.diff(offsets) == 3):
        tri = vtk.vtkTriangleFilter()
        tri.SetInputData(pd)
        tri.Update()
        pd = tri.GetOutput()
        polys = pd.GetPolys()
    verts = vtk_to_numpy(pd.GetPoints().GetData()).astype(np.float64)
    faces = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    return verts, faces


def _decimate_and_smooth(vertices, faces, *, decimate: float, smoothing_iterations: int, pass_band: float):
    """Decimate, then smooth (the order Slicer's closed-surface conversion uses), in physical mm."""
    import vtk

    pd = _to_polydata(vertices, faces)
    if decimate > 0:
        dec = vtk.vtkQuadricDecimation()
        dec.SetInputData(pd)
        dec.SetTargetReduction(float(decimate))
        dec.VolumePreservationOn()  # keeps thin structures from collapsing
        dec.Update()
        pd = dec.GetOutput()
    if smoothing_iterations > 0:
        sm = vtk.vtkWindowedSincPolyDataFilter()
        sm.SetInputData(pd)
        sm.SetNumberOfIterations(int(smoothing_iterations))
        sm.SetPassBand(float(pass_band))
        sm.BoundarySmoothingOff()
        sm.FeatureEdgeSmoothingOff()
        sm.NonManifoldSmoothingOn()
        # normalised coordinates make the filter's result independent of the mesh's size/position
        sm.NormalizeCoordinatesOn()
        sm.Update()
        pd = sm.GetOutput()
    clean = vtk.vtkCleanPolyData()  # drops points that decimation left unused
    clean.SetInputData(pd)
    clean.PointMergingOff()
    clean.Update()
    return _from_polydata(clean.GetOutput())


# ---------------------------------------------------------------------------------------------
# marching cubes


def _surface_in_box(
    field_zyx: np.ndarray,
    start_zyx: tuple[int, int, int],
    geometry: Geometry,
    level: float,
    smoothing_iterations: int,
    pass_band: float,
    decimate: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Marching cubes on a cropped field whose voxel [0,0,0] is voxel `start_zyx` of the full grid."""
    from skimage.measure import marching_cubes

    # A one-voxel border below `level` closes surfaces that touch the grid boundary.
    fill = 0.0 if level > 0 else float(level) - 1.0
    padded = np.pad(field_zyx.astype(np.float32, copy=False), 1, mode="constant", constant_values=fill)
    try:
        verts_zyx, faces, _, _ = marching_cubes(padded, level=float(level), allow_degenerate=False)
    except (ValueError, RuntimeError):
        return None  # no crossing at this level
    if faces.size == 0:
        return None
    ijk = (verts_zyx - 1.0 + np.asarray(start_zyx, dtype=float))[:, ::-1]  # (k,j,i) -> (i,j,k)
    verts = geometry.index_to_physical(ijk)
    faces = faces.astype(np.int64)
    if decimate > 0 or smoothing_iterations > 0:
        verts, faces = _decimate_and_smooth(
            verts, faces, decimate=decimate, smoothing_iterations=smoothing_iterations, pass_band=pass_band
        )
        if faces.size == 0:
            return None
    # Axis reversal and the direction matrix's handedness decide the winding; fix it by the
    # sign of the enclosed volume (the surface is closed thanks to the padding).
    if signed_volume(Mesh(verts, faces)) < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, slice, slice] | None:
    """Bounding box of True voxels grown by `margin` (clipped to the grid), or None."""
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(np.any(mask, axis=other))
        if idx.size == 0:
            return None
        box.append(slice(max(idx[0] - margin, 0), min(idx[-1] + margin + 1, mask.shape[ax])))
    return tuple(box)


def surface_from_probability(
    prob: np.ndarray,
    geometry: Geometry,
    *,
    level: float = 0.5,
    smoothing_iterations: int = 0,
    pass_band: float = 0.1,
    decimate: float = 0.0,
    label_value: int | None = None,
    label_name: str | None = None,
    color: tuple[float, float, float] | None = None,
) -> Mesh | None:
    """Iso-surface of a (Z, Y, X) probability (or 0/1 mask) at `level`, in LPS mm; None if empty.

    Faces wind so normals point outward (towards values below `level`).
    """
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise InputError(f"surface_from_probability needs a 3D (Z, Y, X) array, got shape {prob.shape}")
    if not 0.0 <= float(decimate) < 1.0:
        raise InputError(f"mesh decimation must be in [0, 1), got {decimate}")
    if int(smoothing_iterations) < 0:
        raise InputError(f"mesh smoothing iterations must be >= 0, got {smoothing_iterations}")
    inside = prob >= level
    # Cropping to the >= level voxels plus one voxel is exact: every cube with a crossing has
    # a corner >= level, and all its corners lie within one voxel of that corner.
    box = _bbox(inside, margin=1)
    if box is None:
        return None
    result = _surface_in_box(
        prob[box], tuple(s.start for s in box), geometry, level, int(smoothing_iterations), pass_band, float(decimate)
    )
    if result is None:
        return None
    verts, faces = result
    return Mesh(verts, faces, vertex_normals(verts, faces), label_value, label_name, color)


def surfaces_from_labels(
    labels: Volume,
    *,
    values: list[int] | None = None,
    table: dict[int, LabelInfo] | None = None,
    options: MeshOptions | None = None,
) -> list[Mesh]:
    """One closed surface per label value of a label map (in LPS mm), named and coloured from `table`.

    Labels with no surface (absent values) are skipped. Each label is meshed as a 0/1 mask at
    `options.level`, in its own bounding box, so many small labels stay fast.
    """
    from scipy import ndimage

    from . import labels as label_utils

    options = options or MeshOptions()
    arr = np.asarray(labels.array)
    present = label_utils.label_values(arr)
    wanted = present if values is None else [int(v) for v in values if int(v) in set(present)]
    table = table if table is not None else label_utils.label_table(labels)
    if arr.dtype.kind == "f":
        arr = np.round(arr).astype(np.int64)
    boxes = {}
    if present and present[0] >= 0 and present[-1] < 1_000_000:
        # one pass over the array for all labels' bounding boxes
        objects = ndimage.find_objects(arr.astype(np.int64, copy=False) if arr.dtype.kind == "b" else arr)
        boxes = {v: objects[v - 1] for v in wanted if v - 1 < len(objects) and objects[v - 1] is not None}
    meshes = []
    for v in wanted:
        box = boxes.get(v) or _bbox(arr == v, margin=0)
        if box is None:
            continue
        # the bounding box is enough: outside it the mask is 0, which the padding supplies
        mask = (arr[box] == v).astype(np.float32)
        result = _surface_in_box(
            mask,
            tuple(s.start for s in box),
            labels.geometry,
            options.level,
            int(options.smoothing_iterations),
            options.pass_band,
            float(options.decimate),
        )
        if result is None:
            continue
        info = table.get(v) or LabelInfo(v, f"label_{v}", label_utils.default_color(v))
        verts, faces = result
        meshes.append(Mesh(verts, faces, vertex_normals(verts, faces), v, info.name, info.color))
    return meshes


def surfaces_from_probabilities(
    probs: np.ndarray,
    values: list[int],
    geometry: Geometry,
    *,
    table: dict[int, LabelInfo] | None = None,
    options: MeshOptions | None = None,
) -> list[Mesh]:
    """One surface per channel of [L, Z, Y, X] label probabilities (e.g. the seg head's output).

    Smoother than meshing the decoded label map, since the iso-level falls between voxels.
    Channels with no voxel at `options.level` are skipped.
    """
    from .labels import default_color

    options = options or MeshOptions()
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] != len(values):
        raise InputError(f"expected probabilities [L, Z, Y, X] with L = {len(values)}, got shape {probs.shape}")
    table = table or {}
    meshes = []
    for c, v in enumerate(values):
        info = table.get(int(v)) or LabelInfo(int(v), f"label_{int(v)}", default_color(int(v)))
        m = surface_from_probability(
            probs[c], geometry, level=options.level, smoothing_iterations=options.smoothing_iterations,
            pass_band=options.pass_band, decimate=options.decimate,
            label_value=int(v), label_name=info.name, color=info.color,
        )
        if m is not None:
            meshes.append(m)
    return meshes


def write_label_meshes(
    meshes: list[Mesh],
    out_dir: str | os.PathLike,
    *,
    options: MeshOptions | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write each mesh to `out_dir/<safe label name>.<format>` (unique names); returns the paths."""
    from .labels import safe_filename

    options = options or MeshOptions()
    out = Path(out_dir)
    taken: set[str] = set()
    paths = []
    for m in meshes:
        fallback = f"label_{m.label_value}" if m.label_value is not None else "mesh"
        stem = safe_filename(m.label_name or fallback, taken, fallback=fallback)
        target = out / f"{stem}.{options.format}"
        paths.append(write_mesh(m, target, coordinate_system=options.coordinate_system, overwrite=overwrite))
    return paths


# ---------------------------------------------------------------------------------------------
# files


def _header_text(mesh: Mesh, coordinate_system: str | None) -> str:
    name = re.sub(r"[\r\n]+", " ", mesh.label_name or "")[:80]
    text = "MedGS mesh" + (f" {name}" if name else "") + "."
    return text + (f" SPACE={coordinate_system}" if coordinate_system else "")


def write_mesh(
    mesh: Mesh,
    path: str | os.PathLike,
    *,
    coordinate_system: str | None = "LPS",
    overwrite: bool = False,
) -> Path:
    """Write .ply, .stl, .vtk (legacy polydata) or .obj, atomically; returns the path.

    `coordinate_system` "LPS" writes the vertices as stored; "RAS" negates x and y (a 180 degree
    rotation, so the winding stays outward). Both are tagged "SPACE=<cs>" where Slicer looks
    for it. None writes LPS without a tag (the upstream slices_to_ply output).
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise InputError(f"cannot write mesh {path.name}: the extension must be one of .{', .'.join(MESH_FORMATS)}")
    cs = None if coordinate_system is None else str(coordinate_system).upper()
    if cs not in (None, "LPS", "RAS"):
        raise InputError(f"mesh coordinate system must be LPS or RAS, got {coordinate_system!r}")
    if mesh.n_faces == 0:
        raise InputError(f"cannot write mesh {path.name}: it has no triangles")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite to replace it")
    verts = mesh.vertices.copy()
    normals = mesh.normals.copy() if mesh.normals is not None else vertex_normals(mesh.vertices, mesh.faces)
    if cs == "RAS":
        verts, normals = flip_lps_ras(verts), flip_lps_ras(normals)
    from .io import atomic_output

    header = _header_text(mesh, cs)
    with atomic_output(path, overwrite=True) as tmp:    # existence was checked above
        if fmt == "obj":
            _write_obj(tmp, verts, mesh.faces, normals, header, mesh.label_name)
        else:
            _write_with_vtk(tmp, fmt, verts, mesh.faces, normals, header, cs, mesh.color)
    return path


def _write_obj(path: Path, verts, faces, normals, header: str, name: str | None) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"# {header}\n")
        obj_name = re.sub(r"\s+", "_", name) if name else "mesh"
        fh.write(f"o {obj_name}\n")
        np.savetxt(fh, verts, fmt="v %.9g %.9g %.9g")
        np.savetxt(fh, normals, fmt="vn %.6g %.6g %.6g")
        f1 = faces + 1  # OBJ indices are 1-based; vertex and normal share the index
        np.savetxt(fh, np.repeat(f1, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")


def _write_with_vtk(path: Path, fmt: str, verts, faces, normals, header: str, cs: str | None, color) -> None:
    import vtk

    pd = _to_polydata(verts, faces, normals)
    if fmt == "vtk":
        w = vtk.vtkPolyDataWriter()
        w.SetHeader(header)  # Slicer reads "SPACE=LPS|RAS" from this line
        w.SetFileVersion(42)  # the 4.2 layout Slicer itself writes; readable by older tools too
        w.SetFileTypeToBinary()
    elif fmt == "stl":
        w = vtk.vtkSTLWriter()
        w.SetHeader(header)  # becomes the STL solid name / 80-byte header, where Slicer looks
        w.SetFileTypeToBinary()
    else:
        w = vtk.vtkPLYWriter()
        w.SetFileTypeToBinary()
        if cs:
            w.AddComment(f"SPACE={cs}")
        w.AddComment(header)
        if color is not None:
            # a uniform per-vertex colour, so viewers show the label colour without a table
            w.SetColorModeToUniformPointColor()
            w.SetColor(*[int(round(255 * min(max(c, 0.0), 1.0))) for c in color])
    w.SetFileName(str(path))
    w.SetInputData(pd)
    if not w.Write():
        raise OSError(f"VTK could not write {path}")


def read_coordinate_system(path: str | os.PathLike) -> str | None:
    """"LPS"/"RAS" from a mesh file's SPACE= tag (first 1 kB), or None when untagged."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    m = re.search(rb"SPACE=(LPS|RAS)", head)
    return m.group(1).decode() if m else None


def read_mesh(path: str | os.PathLike) -> Mesh:
    """Read a mesh file back (vertices converted to LPS when the file says SPACE=RAS).

    STL stores each triangle on its own, so its reader merges coincident points: vertex
    order and count can differ from what was written.
    """
    import vtk

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if not path.is_file():
        raise InputError(f"mesh file {path} does not exist")
    if fmt == "obj":
        verts, faces = _read_obj(path)
    else:
        reader = {"vtk": vtk.vtkPolyDataReader, "stl": vtk.vtkSTLReader, "ply": vtk.vtkPLYReader}.get(fmt)
        if reader is None:
            raise InputError(f"cannot read mesh {path.name}: unsupported extension")
        r = reader()
        r.SetFileName(str(path))
        r.Update()
        verts, faces = _from_polydata(r.GetOutput())
    if read_coordinate_system(path) == "RAS":
        verts = flip_lps_ras(verts)
    return Mesh(verts, faces)


def read_mesh_vertices(path: str | os.PathLike) -> np.ndarray:
    """(N, 3) vertices of a mesh file in LPS mm (see `read_mesh`)."""
    return read_mesh(path).vertices


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    verts, faces = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                faces.append([int(tok.split("/")[0]) - 1 for tok in line.split()[1:4]])
    return np.asarray(verts, dtype=np.float64).reshape(-1, 3), np.asarray(faces, dtype=np.int64).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# upstream slices_to_ply.py behaviour on rendered PNG folders


@dataclass
class PngMeshOptions:
    """The upstream defaults: TV denoise 0.5, Gaussian sigma (6, 1.3, 1.3), Otsu when thresh <= 0."""

    thresh: float = 0.0
    inter: int = 8
    tv_weight: float = 0.5
    sigma: tuple[float, float, float] = (6.0, 1.3, 1.3)


_FRAME_NAME = re.compile(r"(\d+)(?:_(\d+))?")


def _frame_key(name: str) -> tuple:
    m = _FRAME_NAME.match(name)
    return (0, int(m.group(1)), int(m.group(2) or 0), name) if m else (1, 0, 0, name)


def sorted_png_files(folder: str | os.PathLike) -> list[Path]:
    """PNG frames of a render folder in (frame, sub-index) order; names starting with '_' are skipped."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("_")]
    return sorted(files, key=lambda p: _frame_key(p.name))


def nifti_zooms(path: str | os.PathLike) -> tuple[float, float, float]:
    """Voxel sizes (first three header zooms) of a NIfTI file, as upstream reads them."""
    import nibabel as nib

    try:
        zooms = nib.load(str(path)).header.get_zooms()[:3]
    except Exception as err:  # nibabel raises many types for broken files
        raise InputError(f"cannot read NIfTI spacing from {path}: {err}") from err
    return tuple(float(z) for z in zooms)


def mesh_from_png_slices(
    png_dir: str | os.PathLike,
    *,
    thresh: float = 0.0,
    inter: int = 8,
    spacing: tuple[float, float, float] | None = None,
    options: PngMeshOptions | None = None,
) -> Mesh:
    """Upstream `slices_to_ply.py` on one folder of rendered mask PNGs.

    Each frame is read as grayscale, TV-denoised (weight 0.5), stacked to (slices, H, W),
    Gaussian-filtered (sigma (6, 1.3, 1.3)) and meshed by marching cubes at `thresh` (0..255;
    Otsu's threshold when <= 0) with spacing [sp[2] / inter, sp[0], sp[1]], `sp` = NIfTI zooms
    or (1, 1, 1). Vertices are in that (slice, row, column) millimetre frame, like upstream,
    not in LPS: the PNGs carry no orientation. Unlike upstream, faces are wound outward, so
    vertex normals point out of the object (upstream's point in).
    """
    import cv2
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_otsu
    from skimage.measure import marching_cubes
    from skimage.restoration import denoise_tv_chambolle

    opts = options or PngMeshOptions(thresh=thresh, inter=inter)
    if int(opts.inter) < 1:
        raise InputError(f"--inter must be a positive integer, got {opts.inter}")
    files = sorted_png_files(png_dir)
    frames = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue  # upstream skips unreadable files too
        if img.dtype != np.uint8:  # 16-bit PNGs: bring to the 0..255 scale thresh is given on
            img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255.0).astype(np.uint8)
        den = denoise_tv_chambolle(img.astype(np.float64) / 255.0, weight=float(opts.tv_weight))
        frames.append(np.clip(den * 255.0, 0, 255).astype(np.uint8))
    if not frames:
        raise InputError(f"no readable PNG frames in {png_dir}")
    if len({f.shape for f in frames}) != 1:
        raise InputError(f"the PNG frames in {png_dir} do not all have the same size")
    if len(frames) < 2:
        raise InputError(f"{png_dir} holds one PNG frame; a mesh needs at least two")
    volume = gaussian_filter(np.stack(frames).astype(np.float32), sigma=tuple(opts.sigma))
    level = float(opts.thresh) if opts.thresh > 0 else float(threshold_otsu(volume))
    if not volume.min() < level < volume.max():
        raise InputError(
            f"no surface in {png_dir} at threshold {level:g} (the filtered frames span "
            f"{volume.min():.1f}..{volume.max():.1f} on the 0..255 scale)"
        )
    sp = spacing or (1.0, 1.0, 1.0)
    verts, faces, _, _ = marching_cubes(volume, level=level, spacing=(sp[2] / int(opts.inter), sp[0], sp[1]))
    verts = verts.astype(np.float64)
    faces = faces.astype(np.int64)
    if signed_volume(Mesh(verts, faces)) < 0:  # outward normals (upstream keeps skimage's inward winding)
        faces = faces[:, ::-1].copy()
    return Mesh(verts, faces, vertex_normals(verts, faces), label_name=Path(png_dir).parent.name or None)
