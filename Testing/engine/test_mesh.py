"""Surface meshes: physical placement on oblique anisotropic grids, file round trips, upstream PNG mode."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from MedGSLib import mesh as M
from MedGSLib.errors import InputError, OutputExistsError
from MedGSLib.geometry import Geometry, LabelInfo, Volume

SPACING = (0.8, 1.1, 2.5)
ORIGIN = (-40.0, 25.0, 110.0)
SHAPE = (24, 48, 64)  # (Z, Y, X)


def _rotation(ax_deg, ay_deg, az_deg):
    ax, ay, az = np.radians([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _oblique_geometry(flip: bool = False) -> Geometry:
    r = _rotation(20, -35, 50)
    if flip:
        r = r @ np.diag([1.0, -1.0, 1.0])  # a left-handed direction matrix (det -1)
    return Geometry(SPACING, ORIGIN, tuple(r.reshape(-1)))


def _distance_field(geometry: Geometry, centre_ijk=(31.3, 22.7, 11.4)):
    """Physical distance of every voxel centre from a centre given in (i, j, k) indices."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    pts = geometry.index_to_physical(np.stack([i, j, k], axis=-1).reshape(-1, 3))
    c = geometry.index_to_physical(np.asarray(centre_ijk, dtype=float))
    return np.linalg.norm(pts - c, axis=1).reshape(SHAPE), c


@pytest.mark.parametrize("flip", [False, True])
def test_sphere_label_in_physical_space(flip):
    g = _oblique_geometry(flip)
    d, c = _distance_field(g)
    r = 12.0
    mask = (d <= r).astype(np.float32)
    m = M.surface_from_probability(mask, g, label_value=3, label_name="ball")
    assert m is not None and m.label_value == 3
    radii = np.linalg.norm(m.vertices - c, axis=1)
    # a 0/1 mask: the surface lies within one voxel of the true sphere; centre well inside that
    assert np.linalg.norm(m.vertices.mean(axis=0) - c) < 0.2
    assert abs(radii.mean() - r) < min(SPACING)
    assert np.all(np.abs(radii - r) < max(SPACING))
    # outward winding regardless of the direction matrix's handedness
    vol = M.signed_volume(m)
    assert vol > 0 and abs(vol - 4 / 3 * np.pi * r**3) / (4 / 3 * np.pi * r**3) < 0.03
    radial = (m.vertices - c) / radii[:, None]
    cosines = np.einsum("ij,ij->i", m.normals, radial)
    assert np.all(cosines > 0) and cosines.mean() > 0.85  # voxel steps tilt normals, never flip them


def test_smooth_probability_gives_exact_sphere_and_smoothing_keeps_it():
    g = _oblique_geometry()
    d, c = _distance_field(g)
    r = 10.0
    prob = np.clip(0.5 + (r - d) / 4.0, 0.0, 1.0)  # linear ramp: marching cubes finds r exactly
    m = M.surface_from_probability(prob, g)
    radii = np.linalg.norm(m.vertices - c, axis=1)
    assert np.abs(radii - r).max() < 0.15
    smoothed = M.surface_from_probability(prob, g, smoothing_iterations=15, decimate=0.5)
    assert smoothed.n_faces < 0.6 * m.n_faces
    s_radii = np.linalg.norm(smoothed.vertices - c, axis=1)
    assert abs(s_radii.mean() - r) < 0.3 and M.signed_volume(smoothed) > 0


def test_surface_touching_the_border_is_closed_and_empty_gives_none():
    g = Geometry((1.0, 1.0, 1.0))
    block = np.zeros((6, 7, 8), dtype=np.float32)
    block[:3, :, :] = 1.0  # touches five faces of the grid
    m = M.surface_from_probability(block, g)
    # closed: every edge is shared by exactly two triangles
    e = np.sort(np.concatenate([m.faces[:, [0, 1]], m.faces[:, [1, 2]], m.faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert np.all(counts == 2)
    lo, hi = m.vertices.min(axis=0), m.vertices.max(axis=0)
    assert np.allclose(lo, [-0.5, -0.5, -0.5]) and np.allclose(hi, [7.5, 6.5, 2.5])  # x, y, z
    assert M.surface_from_probability(np.zeros((4, 4, 4)), g) is None
    assert M.surface_from_probability(np.full((4, 4, 4), 0.3), g, level=0.5) is None


def test_surfaces_from_labels_one_mesh_per_value():
    g = Geometry((1.0, 1.5, 2.0), origin=(10.0, -5.0, 3.0))
    arr = np.zeros((12, 14, 16), dtype=np.uint8)
    arr[2:5, 2:6, 2:6] = 1
    arr[6:10, 8:12, 9:14] = 42
    vol = Volume(arr, g, "labels", {42: LabelInfo(42, "liver", (0.5, 0.2, 0.1))})
    meshes = M.surfaces_from_labels(vol, options=M.MeshOptions(smoothing_iterations=0))
    assert [m.label_value for m in meshes] == [1, 42]
    assert meshes[1].label_name == "liver" and meshes[1].color == (0.5, 0.2, 0.1)
    assert meshes[0].label_name == "label_1"
    # the 42 box: i 9..13, j 8..11, k 6..9 -> mm bounds (half a voxel shrinks to the 0.5 level)
    lo, hi = meshes[1].vertices.min(axis=0), meshes[1].vertices.max(axis=0)
    assert np.allclose(lo, [10 + 8.5 * 1.0, -5 + 7.5 * 1.5, 3 + 5.5 * 2.0])
    assert np.allclose(hi, [10 + 13.5 * 1.0, -5 + 11.5 * 1.5, 3 + 9.5 * 2.0])
    only = M.surfaces_from_labels(vol, values=[42, 7])
    assert [m.label_value for m in only] == [42]


def test_surfaces_from_probabilities_per_channel():
    g = _oblique_geometry()
    d, c = _distance_field(g)
    probs = np.stack([np.clip(0.5 + (6.0 - d) / 4.0, 0, 1), np.zeros(SHAPE), np.clip(0.5 + (9.0 - d) / 4.0, 0, 1)])
    table = {7: LabelInfo(7, "core", (1.0, 0.0, 0.0))}
    meshes = M.surfaces_from_probabilities(probs, [7, 8, 9], g, table=table,
                                           options=M.MeshOptions(smoothing_iterations=0))
    assert [m.label_value for m in meshes] == [7, 9]  # channel 8 has no surface
    assert meshes[0].label_name == "core" and meshes[1].label_name == "label_9"
    for m, r in zip(meshes, (6.0, 9.0)):
        assert abs(np.linalg.norm(m.vertices - c, axis=1).mean() - r) < 0.1
    with pytest.raises(InputError):
        M.surfaces_from_probabilities(probs, [7, 8], g)


def _tetra_mesh():
    v = np.array([[-120.123456, 33.5, 410.25], [-100.0, 33.5, 410.25], [-120.123456, 60.75, 410.25],
                  [-120.123456, 33.5, 440.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return M.Mesh(v, f, M.vertex_normals(v, f), 4, "left kidney", (0.2, 0.6, 0.9))


@pytest.mark.parametrize("fmt", M.MESH_FORMATS)
def test_write_read_round_trip_keeps_lps_coordinates(tmp_path, fmt):
    mesh = _tetra_mesh()
    assert M.signed_volume(mesh) > 0
    path = M.write_mesh(mesh, tmp_path / f"kidney.{fmt}")
    assert path.exists() and not list(tmp_path.glob("*.tmp-*"))
    assert M.read_coordinate_system(path) == "LPS"
    back = M.read_mesh(path)
    # float32 in the binary formats: 1e-4 mm at 400 mm from the origin
    dist = np.linalg.norm(back.vertices[:, None, :] - mesh.vertices[None, :, :], axis=2)
    assert back.n_vertices == 4 and np.all(dist.min(axis=1) < 1e-4)
    assert back.n_faces == 4 and M.signed_volume(back) == pytest.approx(M.signed_volume(mesh), rel=1e-5)
    with pytest.raises(OutputExistsError):
        M.write_mesh(mesh, path)
    M.write_mesh(mesh, path, overwrite=True)

    ras = M.write_mesh(mesh, tmp_path / f"kidney_ras.{fmt}", coordinate_system="RAS")
    assert M.read_coordinate_system(ras) == "RAS"
    back_ras = M.read_mesh(ras)  # read_mesh converts back to LPS
    dist = np.linalg.norm(back_ras.vertices[:, None, :] - mesh.vertices[None, :, :], axis=2)
    assert np.all(dist.min(axis=1) < 1e-4) and M.signed_volume(back_ras) > 0


def test_vtk_header_is_the_slicer_coordinate_line(tmp_path):
    path = M.write_mesh(_tetra_mesh(), tmp_path / "m.vtk")
    lines = path.read_bytes().split(b"\n")
    assert lines[0].startswith(b"# vtk DataFile Version")
    assert lines[1].endswith(b"SPACE=LPS")  # Slicer writes "3D Slicer output. SPACE=LPS" here
    assert lines[3] == b"DATASET POLYDATA"


def test_slicer_reads_written_files_as_lps(tmp_path):
    """Slicer's own model storage node converts our LPS files to RAS (x, y negated)."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLModelStorageNode"):
        pytest.skip("slicer-core without MRML model storage")
    from vtk.util.numpy_support import vtk_to_numpy

    mesh = _tetra_mesh()
    scene = slicer.vtkMRMLScene()
    for fmt in M.MESH_FORMATS:
        path = M.write_mesh(mesh, tmp_path / f"m.{fmt}")
        node = slicer.vtkMRMLModelNode()
        scene.AddNode(node)
        storage = slicer.vtkMRMLModelStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(path))
        assert storage.ReadData(node) == 1
        assert storage.GetCoordinateSystem() == 1, fmt  # 1 = LPS, read from our header
        ras = vtk_to_numpy(node.GetPolyData().GetPoints().GetData()).astype(float)
        expected = mesh.vertices * np.array([-1.0, -1.0, 1.0])
        dist = np.linalg.norm(ras[:, None, :] - expected[None, :, :], axis=2)
        assert np.all(dist.min(axis=1) < 1e-4), fmt


def test_write_errors(tmp_path):
    with pytest.raises(InputError, match="extension"):
        M.write_mesh(_tetra_mesh(), tmp_path / "m.xyz")
    with pytest.raises(InputError, match="no triangles"):
        M.write_mesh(M.Mesh(np.zeros((0, 3)), np.zeros((0, 3))), tmp_path / "m.ply")


def test_write_label_meshes_unique_names(tmp_path):
    a, b = _tetra_mesh(), _tetra_mesh()
    b.label_value, b.label_name = 5, "left/kidney"
    paths = M.write_label_meshes([a, b], tmp_path / "meshes", options=M.MeshOptions(format="stl"))
    assert [p.name for p in paths] == ["left_kidney.stl", "left_kidney_2.stl"]


def _write_sphere_pngs(folder, n=24, size=40, radius_px=10.0, stretch=1.0):
    import cv2

    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for s in range(n):
        z = (s - (n - 1) / 2) * stretch
        r2 = radius_px**2 - z**2
        img = np.zeros((size, size), np.uint8)
        if r2 > 0:
            img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= r2] = 255
        # upstream names: <frame>_<sub-index>.png, sorted numerically not alphabetically
        cv2.imwrite(str(folder / f"{s // 4:05d}_{s % 4}.png"), img)
    cv2.imwrite(str(folder / "_preview.png"), np.full((5, 5), 255, np.uint8))  # skipped like upstream


def test_png_slices_mesh_sphere(tmp_path):
    folder = tmp_path / "case1" / "render_mask"
    _write_sphere_pngs(folder, n=48, size=40, radius_px=10.0, stretch=0.5)
    files = M.sorted_png_files(folder)
    assert files[0].name == "00000_0.png" and files[4].name == "00001_0.png" and len(files) == 48
    # slices are 0.5 px apart along the stack: inter=2 with unit spacing makes the sphere round
    m = M.mesh_from_png_slices(folder, thresh=0, inter=2)
    c = m.vertices.mean(axis=0)
    assert np.allclose(c, [(48 - 1) / 2 / 2, 20.0, 20.0], atol=0.3)
    radii = np.linalg.norm(m.vertices - c, axis=1)
    # TV + strong Gaussian blur along the stack move the Otsu surface by a few pixels at most
    assert 7.0 < radii.mean() < 12.0
    assert M.signed_volume(m) > 0


def test_cli_png_mode_writes_ply_per_case(tmp_path, capsys):
    from MedGSLib.cli import mesh as cli_mesh

    root = tmp_path / "renders"
    _write_sphere_pngs(root / "caseA" / "render_mask", n=24)
    _write_sphere_pngs(root / "caseB" / "render", n=24)
    (root / "not_a_case").mkdir()
    parser = argparse.ArgumentParser(prog="medgs")
    cli_mesh.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mesh", "--input", str(root), "--output", str(tmp_path / "out"), "--thresh", "150",
                              "--inter", "1"])
    assert args.func(args) == 0
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["caseA.ply", "caseB.ply"]
    ply = (tmp_path / "out" / "caseA.ply").read_bytes()
    assert ply.startswith(b"ply") and b"SPACE=" not in ply[:400]  # upstream frame, not LPS
    assert M.read_mesh(tmp_path / "out" / "caseA.ply").n_faces > 100
    # neither or both modes: exit code 2 with one line on stderr
    bad = parser.parse_args(["mesh", "-o", str(tmp_path / "x")])
    assert bad.func(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err


def test_cli_label_map_mode(tmp_path, capsys):
    io = pytest.importorskip("MedGSLib.io")
    from MedGSLib.cli import mesh as cli_mesh

    g = _oblique_geometry()
    d, c = _distance_field(g)
    arr = np.zeros(SHAPE, np.uint8)
    arr[d <= 8.0] = 5
    arr[(d > 8.0) & (d <= 11.0)] = 42  # a shell around label 5
    path = io.write_volume(Volume(arr, g, "labels"), tmp_path / "labels.nii.gz")
    parser = argparse.ArgumentParser(prog="medgs")
    cli_mesh.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mesh", str(path), "-o", str(tmp_path / "meshes"), "--format", "ply", "--smooth", "0"])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "meshes").iterdir()) == ["label_42.ply", "label_5.ply"]
    inner = M.read_mesh(tmp_path / "meshes" / "label_5.ply")
    r = np.linalg.norm(inner.vertices - c, axis=1)
    assert abs(r.mean() - 8.0) < min(SPACING)
    # the shell has an outer and an inner surface; its enclosed volume is the shell's
    shell = M.read_mesh(tmp_path / "meshes" / "label_42.ply")
    expected = 4 / 3 * np.pi * (11.0**3 - 8.0**3)
    assert abs(M.signed_volume(shell) - expected) / expected < 0.06
    # existing files are kept unless --overwrite
    assert args.func(args) == 2
    assert "exists" in capsys.readouterr().err


def test_cli_probability_map_and_label_selection(tmp_path, capsys):
    io = pytest.importorskip("MedGSLib.io")
    from MedGSLib.cli import mesh as cli_mesh

    g = _oblique_geometry()
    d, c = _distance_field(g)
    prob = np.clip(0.5 + (7.0 - d) / 4.0, 0.0, 1.0).astype(np.float32)
    path = io.write_volume(Volume(prob, g), tmp_path / "tumour_prob.nii.gz")
    parser = argparse.ArgumentParser(prog="medgs")
    cli_mesh.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mesh", str(path), "-o", str(tmp_path / "out"), "--format", "obj", "--smooth", "0"])
    assert args.func(args) == 0
    m = M.read_mesh(tmp_path / "out" / "tumour_prob.obj")
    assert abs(np.linalg.norm(m.vertices - c, axis=1).mean() - 7.0) < 0.1

    labels = io.write_volume(Volume((d <= 5.0).astype(np.uint8) * 3, g, "labels"), tmp_path / "l.nii.gz")
    args = parser.parse_args(["mesh", str(labels), "-o", str(tmp_path / "o2"), "--labels", "3,4"])
    assert args.func(args) == 2
    assert "[4]" in capsys.readouterr().err
