"""Volume I/O: geometry round trips per format and across back ends, labels, atomic writes, bad input."""
from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from MedGSLib import io
from MedGSLib.errors import InputError, OutputExistsError
from MedGSLib.geometry import Geometry, LabelInfo, Volume

sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")

FORMATS = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"]


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# Oblique (all three angles non-zero, so a swapped or transposed matrix is caught), with a
# reflection in the third column (det = -1) like many scanner files, anisotropic spacing.
_DIRECTION = _rotation(0.3, -0.2, 0.5) @ np.diag([1.0, 1.0, -1.0])
OBLIQUE = Geometry((0.7, 0.9, 3.3), (-12.5, 33.25, 101.125), tuple(_DIRECTION.reshape(-1)))


def _assert_geometry(a: Geometry, b: Geometry, atol: float) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=atol)


def _tolerance(ext: str) -> float:
    # NIfTI stores the affine as float32 (~6e-8 relative, so ~1e-5 mm on a 100 mm origin);
    # NRRD and MetaImage headers are text written with enough digits for double precision.
    return 2e-5 if ext in (".nii", ".nii.gz") else 1e-9


def _no_sitk(monkeypatch) -> None:
    """Make `import SimpleITK` fail, as on the GPU machine."""
    monkeypatch.setitem(sys.modules, "SimpleITK", None)


@pytest.fixture
def volume() -> Volume:
    rng = np.random.default_rng(0)
    # Distinct sizes per axis so an axis mix-up changes the shape.
    array = rng.integers(-1024, 3000, size=(5, 6, 7), dtype=np.int16)
    return Volume(array, OBLIQUE)


@pytest.mark.parametrize("ext", FORMATS)
def test_geometry_and_data_round_trip(tmp_path, volume, ext):
    path = io.write_volume(volume, tmp_path / f"vol{ext}")
    back = io.read_volume(path)
    _assert_geometry(back.geometry, OBLIQUE, _tolerance(ext))
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    # The same file seen by SimpleITK directly: the (i, j, k) / (Z, Y, X) conventions hold.
    img = sitk.ReadImage(str(path))
    assert img.GetSize() == (7, 6, 5)
    np.testing.assert_allclose(img.GetDirection(), OBLIQUE.direction, atol=_tolerance(ext))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_image_dtype_is_kept(tmp_path, dtype):
    array = (np.arange(60).reshape(3, 4, 5) * 3).astype(dtype)
    for ext in (".nrrd", ".nii.gz"):
        back = io.read_volume(io.write_volume(Volume(array, OBLIQUE), tmp_path / f"v{np.dtype(dtype).name}{ext}"))
        assert back.array.dtype == np.dtype(dtype), ext
        np.testing.assert_array_equal(back.array, array)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int64, np.float32, np.float64])
def test_nibabel_keeps_dtype(tmp_path, monkeypatch, dtype):
    _no_sitk(monkeypatch)
    array = (np.arange(60).reshape(3, 4, 5) * 7).astype(dtype)
    back = io.read_volume(io.write_volume(Volume(array, OBLIQUE), tmp_path / "v.nii.gz"))
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, array)


def test_files_are_compressed(tmp_path):
    array = np.zeros((20, 30, 40), np.int16)
    for ext in (".nrrd", ".mha", ".nii.gz"):
        path = io.write_volume(Volume(array, OBLIQUE), tmp_path / f"zeros{ext}")
        assert path.stat().st_size < array.nbytes / 10, ext


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_nibabel_back_end_round_trip(tmp_path, monkeypatch, volume, ext):
    _no_sitk(monkeypatch)
    assert io._sitk() is None
    path = io.write_volume(volume, tmp_path / f"nib{ext}")
    back = io.read_volume(path)
    _assert_geometry(back.geometry, OBLIQUE, 2e-5)
    np.testing.assert_array_equal(back.array, volume.array)


def test_back_ends_agree_on_each_others_files(tmp_path, monkeypatch, volume):
    """Written by one library, read by the other: an LPS/RAS sign flip or axis swap would show."""
    by_sitk = io.write_volume(volume, tmp_path / "by_sitk.nii.gz")
    sitk_view = io.read_volume(by_sitk)
    with monkeypatch.context() as m:
        _no_sitk(m)
        nib_view = io.read_volume(by_sitk)
        by_nib = io.write_volume(volume, tmp_path / "by_nib.nii.gz")
    _assert_geometry(nib_view.geometry, sitk_view.geometry, 1e-6)
    np.testing.assert_array_equal(nib_view.array, sitk_view.array)
    from_nib = io.read_volume(by_nib)  # SimpleITK again
    _assert_geometry(from_nib.geometry, OBLIQUE, 2e-5)
    np.testing.assert_array_equal(from_nib.array, volume.array)
    # Independent check of the physical mapping: voxel (i, j, k) = (6, 0, 4) in LPS.
    img = sitk.ReadImage(str(by_nib))
    expected = OBLIQUE.index_to_physical(np.array([6.0, 0.0, 4.0]))
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((6, 0, 4)), expected, atol=1e-4)


_SHIFT = np.diag([2.0, 3.0, 4.0, 1.0]) + np.array([[0, 0, 0, 10], [0, 0, 0, 20], [0, 0, 0, 30], [0, 0, 0, 0]])
_TURN = np.array([[0, -3.0, 0, -5], [2.0, 0, 0, 6], [0, 0, 4.0, 7], [0, 0, 0, 1]])  # rotated 90 deg


@pytest.mark.parametrize(
    "sform, scode, qform, qcode",
    [
        (_SHIFT, 2, _TURN, 1),  # disagreeing transforms, sform "aligned": ITK takes the qform
        (_SHIFT, 1, _TURN, 1),  # sform "scanner": ITK takes the sform
        (None, 0, _TURN, 1),
        (_SHIFT, 1, None, 0),
        (None, 0, None, 0),  # Analyze style: pixdim, zero origin, identity direction
    ],
)
def test_nibabel_picks_sform_or_qform_like_itk(tmp_path, monkeypatch, sform, scode, qform, qcode):
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), None)
    img.set_sform(sform if sform is not None else np.eye(4), code=scode)
    img.set_qform(qform if qform is not None else np.eye(4), code=qcode)
    img.header.set_zooms((2.0, 3.0, 4.0))  # consistent with both transforms
    path = tmp_path / "codes.nii.gz"
    nib.save(img, str(path))
    by_itk = io.read_volume(path).geometry
    _no_sitk(monkeypatch)
    _assert_geometry(io.read_volume(path).geometry, by_itk, 1e-6)


def test_nibabel_fallback_matches_simpleitk_on_real_files(shared_data, monkeypatch):
    files = sorted(shared_data.glob("*.nii.gz"))
    assert files, "no NIfTI files in the shared data"
    ref = {f: io.read_volume(f) for f in files}
    _no_sitk(monkeypatch)
    for f in files:
        fallback = io.read_volume(f)
        _assert_geometry(fallback.geometry, ref[f].geometry, 1e-6)
        assert fallback.array.dtype == ref[f].array.dtype, f.name
        np.testing.assert_array_equal(fallback.array, ref[f].array)


def test_every_shared_file_reads(shared_data):
    files = sorted(p for p in shared_data.iterdir() if p.name != "README.md")
    assert len(files) == 8
    for f in files:
        kind = "labels" if "_labels" in f.name else "image"
        v = io.read_volume(f, kind)
        assert v.array.ndim == 3 and v.kind == kind
        if kind == "labels":
            assert np.issubdtype(v.array.dtype, np.integer), f.name
            image = io.read_volume(f.with_name(f.name.replace("_labels", "_image")))
            assert image.shape == v.shape and image.geometry.allclose(v.geometry), f.name
    # Known answers from shared/data/README.md.
    tumour = io.read_volume(shared_data / "mr_tumor1_labels.nrrd", "labels")
    assert tumour.size_xyz == (256, 256, 25)
    np.testing.assert_allclose(tumour.geometry.spacing, (0.78125, 0.78125, 6.5), atol=1e-9)
    np.testing.assert_allclose(tumour.geometry.direction, (1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert int((tumour.array == 1).sum()) == 4137
    assert set(np.flatnonzero(tumour.array.reshape(25, -1).any(axis=1))) == set(range(11, 18))
    aorta = io.read_volume(shared_data / "ct_aorta_labels.nii.gz", "labels")
    assert set(np.unique(aorta.array)) == set(range(8))
    assert int((aorta.array == 2).sum()) == 1720
    abdomen = io.read_volume(shared_data / "ct_abdomen3mm_image.nii.gz")
    np.testing.assert_allclose(abdomen.geometry.direction, (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    np.testing.assert_allclose(abdomen.geometry.origin, (177.956, -11.319, 94.302), atol=1e-3)


# --------------------------------------------------------------------------- labels


def _labels_volume() -> Volume:
    array = np.zeros((4, 5, 6), np.int64)
    array[1:3, 1:4, 2:5] = 1
    array[3, 0, 0] = 7
    info = {
        1: LabelInfo(1, "left kidney", (0.8, 0.2, 0.1)),
        7: LabelInfo(7, "tumour", (0.0, 0.5, 1.0)),
    }
    return Volume(array, OBLIQUE, "labels", info)


def test_seg_nrrd_names_and_colours_round_trip(tmp_path):
    vol = _labels_volume()
    path = io.write_volume(vol, tmp_path / "labels.seg.nrrd")
    back = io.read_volume(path, "labels")
    assert back.array.dtype == np.uint8  # smallest type holding 0..7
    np.testing.assert_array_equal(back.array, vol.array)
    assert set(back.labels) == {1, 7}
    for value, info in vol.labels.items():
        assert back.labels[value].name == info.name
        np.testing.assert_allclose(back.labels[value].color, info.color, atol=1e-6)
    header = path.read_bytes().split(b"\n\n", 1)[0].decode()
    assert "Segment0_Name:=left kidney" in header
    assert "Segment1_LabelValue:=7" in header
    assert "Segment0_Extent:=2 4 1 3 1 2" in header  # i0 i1 j0 j1 k0 k1 of label 1


def test_slicer_written_seg_nrrd_header_is_parsed(tmp_path):
    """A header as Slicer writes it (text written here by hand, not by our writer)."""
    data = np.zeros((2, 3, 4), np.uint8)
    data[0, 0, 0], data[1, 2, 3] = 3, 5
    header = (
        "NRRD0004\ntype: unsigned char\ndimension: 3\nspace: left-posterior-superior\n"
        "sizes: 4 3 2\nspace directions: (1,0,0) (0,1,0) (0,0,2)\nkinds: domain domain domain\n"
        "encoding: raw\nspace origin: (0,0,0)\n"
        "Segment0_Color:=0.945098 0.839216 0.568627\nSegment0_ID:=Segment_1\n"
        "Segment0_LabelValue:=3\nSegment0_Layer:=0\nSegment0_Name:=liver\n"
        "Segment1_Color:=0.1 0.2 0.3\nSegment1_ID:=Segment_2\nSegment1_LabelValue:=5\n"
        "Segment1_Layer:=0\nSegment1_Name:=portal vein\n\n"
    )
    path = tmp_path / "slicer.seg.nrrd"
    path.write_bytes(header.encode() + data.tobytes())
    v = io.read_volume(path, "labels")
    np.testing.assert_array_equal(v.array, data)
    assert v.labels[3].name == "liver" and v.labels[5].name == "portal vein"
    np.testing.assert_allclose(v.labels[3].color, (0.945098, 0.839216, 0.568627))
    # Segments in different layers need a 4D array: refused with a pointed message.
    path2 = tmp_path / "layers.seg.nrrd"
    path2.write_bytes(header.replace("Segment1_Layer:=0", "Segment1_Layer:=1").encode() + data.tobytes())
    with pytest.raises(InputError, match="multi-layer"):
        io.read_volume(path2, "labels")


def _slicer_segmentation_io():
    slicer = pytest.importorskip("slicer", exc_type=ImportError)
    if not hasattr(slicer, "vtkMRMLSegmentationStorageNode"):
        pytest.skip("slicer-core without segmentation storage")
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    return slicer, node, storage


def test_slicer_reads_our_seg_nrrd(tmp_path):
    """Slicer's own segmentation storage node (slicer-core) loads what write_volume wrote."""
    _, node, storage = _slicer_segmentation_io()
    path = io.write_volume(_labels_volume(), tmp_path / "for_slicer.seg.nrrd")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    seg = node.GetSegmentation()
    got = {seg.GetNthSegment(i).GetLabelValue(): seg.GetNthSegment(i) for i in range(seg.GetNumberOfSegments())}
    assert set(got) == {1, 7}
    assert got[1].GetName() == "left kidney" and got[7].GetName() == "tumour"
    np.testing.assert_allclose(got[7].GetColor(), (0.0, 0.5, 1.0), atol=1e-6)


def test_we_read_slicer_written_seg_nrrd(tmp_path):
    slicer, node, storage = _slicer_segmentation_io()
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    seg = node.GetSegmentation()
    segments = [("liver", (0.9, 0.8, 0.5), np.s_[1:3, 1:4, 2:5]), ("portal vein", (0.1, 0.2, 0.3), np.s_[3, 0, 0])]
    for name, color, box in segments:
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(6, 5, 4)
        image.SetSpacing(0.7, 0.9, 3.3)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(4, 5, 6)
        voxels[:] = 0
        voxels[box] = 1
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.SetColor(*color)
        segment.AddRepresentation("Binary labelmap", image)
        seg.AddSegment(segment)
    path = tmp_path / "from_slicer.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1
    v = io.read_volume(path, "labels")
    assert {info.name for info in v.labels.values()} == {"liver", "portal vein"}
    liver = next(value for value, info in v.labels.items() if info.name == "liver")
    assert v.labels[liver].color == pytest.approx((0.9, 0.8, 0.5))
    assert int((v.array == liver).sum()) == 2 * 3 * 3
    # Slicer crops the labelmap to the segments' extent: the grid is not the reference grid.
    assert v.shape == (3, 4, 5)


def test_labels_use_smallest_integer_type(tmp_path):
    array = np.zeros((3, 4, 5), np.int64)
    array[0, 0, 0] = 300
    back = io.read_volume(io.write_volume(Volume(array, OBLIQUE, "labels"), tmp_path / "l.nii.gz"), "labels")
    assert back.array.dtype == np.uint16 and back.array.max() == 300
    whole = np.zeros((3, 4, 5), np.float32)
    whole[1] = 2.0
    back = io.read_volume(io.write_volume(Volume(whole, OBLIQUE, "labels"), tmp_path / "f.nrrd"), "labels")
    assert back.array.dtype == np.uint8 and set(np.unique(back.array)) == {0, 2}


def test_float_labels_file_with_whole_numbers_reads_as_integers(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[2] = 4.0
    path = io.write_volume(Volume(array, OBLIQUE), tmp_path / "float_labels.nii.gz")
    v = io.read_volume(path, "labels")
    assert v.array.dtype == np.uint8 and v.array.max() == 4


def test_color_tables(tmp_path):
    table = tmp_path / "FreeSurferColorLUT.txt"
    table.write_text(
        "# FreeSurfer style\n#No. Label Name: R G B A\n\n"
        "0   Unknown                 0   0   0   0\n"
        "2   Left-Cerebral-White-Matter  245 245 245 0   # trailing comment\n"
        "17  Left-Hippocampus        220 216  20 0\n"
    )
    t = io.read_color_table(table)
    assert set(t) == {0, 2, 17}
    assert t[17].name == "Left-Hippocampus"
    np.testing.assert_allclose(t[17].color, (220 / 255, 216 / 255, 20 / 255))
    csv = tmp_path / "table.csv"
    csv.write_text("LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n0,background,0,0,0,0\n4,spleen,157,108,162,255\n")
    c = io.read_color_table(csv)
    assert c[4].name == "spleen" and c[4].color == pytest.approx((157 / 255, 108 / 255, 162 / 255))
    out = io.write_color_table(_labels_volume().labels, tmp_path / "out.ctbl")
    again = io.read_color_table(out)
    assert again[1].name == "left_kidney"  # one-word names for Slicer tables
    np.testing.assert_allclose(again[7].color, (0.0, 0.5, 1.0), atol=0.5 / 255)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 Unknown 0 0 0 0\n5 broken 12\n")
    with pytest.raises(InputError, match="bad.txt line 2"):
        io.read_color_table(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("1 a 1 2 3 0\n1 b 1 2 3 0\n")
    with pytest.raises(InputError, match="appears twice"):
        io.read_color_table(dup)


# --------------------------------------------------------------------------- writing safely


@pytest.mark.parametrize("ext", [".nrrd", ".nhdr", ".nii.gz", ".mhd"])
def test_refuses_to_overwrite_unless_asked(tmp_path, volume, ext):
    path = io.write_volume(volume, tmp_path / f"out{ext}")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputExistsError, match="already exists"):
        io.write_volume(volume, path)
    other = volume.with_array(volume.array + 1)
    io.write_volume(other, path, overwrite=True)
    np.testing.assert_array_equal(io.read_volume(path).array, other.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp files or folders left


class _FailingWriter:
    """Stands in for sitk.ImageFileWriter: writes half a file, then fails like a full disk."""

    def SetFileName(self, name):
        self.name = name

    def SetUseCompression(self, flag):
        pass

    def Execute(self, image):
        Path(self.name).write_bytes(b"partial")
        raise RuntimeError("Description: No space left on device")


@pytest.mark.parametrize("ext", [".nrrd", ".nhdr"])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, volume, ext):
    monkeypatch.setattr(sitk, "ImageFileWriter", _FailingWriter)
    with pytest.raises(InputError, match="No space left"):
        io.write_volume(volume, tmp_path / f"out{ext}")
    assert list(tmp_path.iterdir()) == []


def test_failed_nibabel_write_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch, volume):
    target = io.write_volume(volume, tmp_path / "keep.nii.gz")
    old = target.read_bytes()
    _no_sitk(monkeypatch)

    def broken_save(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(InputError, match="disk full"):
        io.write_volume(volume.with_array(volume.array * 0), target, overwrite=True)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]


def test_atomic_output_context(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with io.atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name == f"a.tmp-{os.getpid()}.txt"
        tmp.write_text("done")
    assert target.read_text() == "done"
    with pytest.raises(ZeroDivisionError):
        with io.atomic_output(target, overwrite=True) as tmp:
            tmp.write_text("half")
            1 / 0
    assert target.read_text() == "done" and [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_output_extension():
    assert io.output_extension("a/b/case.nii.gz") == ".nii.gz"
    assert io.output_extension("CASE.NII") == ".nii"
    assert io.output_extension("x.seg.nrrd") == ".seg.nrrd"
    assert io.output_extension("x.nrrd") == ".nrrd"
    assert io.output_extension("v1.2.mha") == ".mha"
    for bad in ("x.png", "x.gz", "nii.gz", "noext"):
        with pytest.raises(InputError, match="not a supported volume file"):
            io.output_extension(bad)


def test_check_writable(tmp_path, monkeypatch):
    assert io.check_writable(tmp_path / "new" / "deeper" / "out.nrrd") == tmp_path / "new" / "deeper" / "out.nrrd"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    existing = tmp_path / "there.nii.gz"
    existing.write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        io.check_writable(existing)
    assert io.check_writable(existing, overwrite=True) == existing
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        io.check_writable(blocker / "out.nii.gz")
    with pytest.raises(InputError, match="not a supported"):
        io.check_writable(tmp_path / "out.png")
    assert io.check_writable(tmp_path / "run.json", volume_format=False).name == "run.json"
    _no_sitk(monkeypatch)
    with pytest.raises(InputError, match="needs SimpleITK"):
        io.check_writable(tmp_path / "out.nrrd")
    assert io.check_writable(tmp_path / "out.nii.gz").name == "out.nii.gz"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into read-only folders")
def test_check_writable_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write into"):
            io.check_writable(ro / "out.nii.gz")
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- bad input


@pytest.fixture(params=["sitk", "nibabel"])
def backend(request, monkeypatch):
    if request.param == "nibabel":
        _no_sitk(monkeypatch)
    return request.param


def _nifti(path: Path, data: np.ndarray, **intent) -> Path:
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    if intent:
        img.header.set_intent(intent["intent"])
    nib.save(img, str(path))
    return path


def test_rejects_2d(tmp_path, backend):
    path = _nifti(tmp_path / "flat.nii.gz", np.zeros((5, 6), np.float32))
    with pytest.raises(InputError, match=r"flat\.nii\.gz is 2D"):
        io.read_volume(path)


def test_rejects_4d_but_squeezes_trailing_singleton(tmp_path, backend):
    path = _nifti(tmp_path / "series.nii.gz", np.zeros((5, 6, 7, 3), np.float32))
    with pytest.raises(InputError, match=r"series\.nii\.gz is 4D"):
        io.read_volume(path)
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7, 1)
    v = io.read_volume(_nifti(tmp_path / "single.nii.gz", data))
    assert v.shape == (7, 6, 5)
    np.testing.assert_array_equal(v.array, data[..., 0].transpose(2, 1, 0))
    np.testing.assert_allclose(v.geometry.spacing, (2, 3, 4))


def test_squeezes_singleton_4th_dimension_of_nrrd(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (z, y, x)
    header = (
        "NRRD0004\ntype: short\ndimension: 4\nspace: left-posterior-superior\nsizes: 6 5 4 1\n"
        "space directions: (0.5,0,0) (0,0.6,0) (0,0,2) none\nkinds: domain domain domain list\n"
        "endian: little\nencoding: raw\nspace origin: (1,2,3)\n\n"
    )
    path = tmp_path / "t1.nrrd"
    path.write_bytes(header.encode() + data.astype("<i2").tobytes())
    v = io.read_volume(path)
    assert v.shape == (4, 5, 6)
    np.testing.assert_array_equal(v.array, data)
    np.testing.assert_allclose(v.geometry.spacing, (0.5, 0.6, 2.0))
    np.testing.assert_allclose(v.geometry.origin, (1, 2, 3))


def test_rejects_vector_image(tmp_path, backend):
    path = _nifti(tmp_path / "vec.nii.gz", np.zeros((5, 6, 7, 1, 3), np.float32), intent="vector")
    with pytest.raises(InputError, match=r"vec\.nii\.gz has 3 values per voxel"):
        io.read_volume(path)


def test_rejects_multicomponent_nrrd(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(img, str(path))
    with pytest.raises(InputError, match=r"rgb\.nrrd has 3 values per voxel"):
        io.read_volume(path)


def test_rejects_nan_and_inf(tmp_path, backend):
    data = np.ones((5, 6, 7), np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    with pytest.raises(InputError, match=r"nan\.nii\.gz has 2 NaN or infinite voxels"):
        io.read_volume(_nifti(tmp_path / "nan.nii.gz", data))


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_finds_nan_anywhere_in_large_nifti(tmp_path, ext):
    """ITK's NIfTI reader turns NaN into 0, so io scans the file itself, in 4 MiB chunks:
    NaNs at a chunk boundary and in the very last voxel must still be found."""
    data = np.zeros((64, 128, 160), np.float64)  # 10.5 MB: three chunks
    flat = data.reshape(-1)
    # 540 header bytes are read first, then 4 MiB chunks; data starts at byte 352, so the
    # float64 at this index straddles the first chunk boundary.
    first_boundary = (540 + (1 << 22) - 352) // 8
    flat[[first_boundary - 1, first_boundary, -1]] = [np.nan, -np.inf, np.nan]
    path = _nifti(tmp_path / f"big{ext}", data)
    with pytest.raises(InputError, match=r"big\.nii(\.gz)? has 3 NaN or infinite voxels"):
        io.read_volume(path)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_rejects_truncated_nifti(tmp_path, backend, ext):
    rng = np.random.default_rng(1)
    path = _nifti(tmp_path / f"whole{ext}", rng.random((20, 30, 40)).astype(np.float32))
    raw = path.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(InputError, match=r"cut\.nii(\.gz)? is (damaged or )?truncated"):
        io.read_volume(cut)


def test_rejects_truncated_nrrd_and_mha(tmp_path, volume):
    big = volume.with_array(np.random.default_rng(2).integers(0, 30000, (20, 30, 40)).astype(np.int16))
    for ext in (".nrrd", ".mha"):
        raw = io.write_volume(big, tmp_path / f"whole{ext}").read_bytes()
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(raw[: len(raw) * 2 // 3])
        with pytest.raises(InputError, match=rf"cut\{ext}"):
            io.read_volume(cut)


def test_rejects_garbage_missing_and_unsupported(tmp_path, backend):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"this is not an image" * 10))
    with pytest.raises(InputError, match=r"junk\.nii\.gz"):
        io.read_volume(junk)
    with pytest.raises(InputError, match=r"absent\.nrrd does not exist"):
        io.read_volume(tmp_path / "absent.nrrd")
    png = tmp_path / "slice.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="not a supported volume file"):
        io.read_volume(png)
    with pytest.raises(InputError, match="kind must be"):
        io.read_volume(junk, kind="mask")


def test_nrrd_without_simpleitk_names_the_dependency(tmp_path, monkeypatch, volume):
    path = io.write_volume(volume, tmp_path / "v.nrrd")
    _no_sitk(monkeypatch)
    with pytest.raises(InputError, match="needs SimpleITK"):
        io.read_volume(path)
    with pytest.raises(InputError, match="needs SimpleITK"):
        io.write_volume(volume, tmp_path / "w.nrrd")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(InputError, match="needs SimpleITK or nibabel"):
        io.write_volume(volume, tmp_path / "w.nii.gz")
    assert not (tmp_path / "w.nii.gz").exists()


def test_rejects_non_integer_labels(tmp_path, backend):
    data = np.zeros((5, 6, 7), np.float32)
    data[2, 2, 2] = 1.5
    path = _nifti(tmp_path / "soft.nii.gz", data)
    message = r"soft\.nii\.gz is not a label map: it has 1 non-integer values \(e\.g\. 1\.5\)"
    with pytest.raises(InputError, match=message):
        io.read_volume(path, "labels")
    assert io.read_volume(path).array.dtype == np.float32  # fine as an image
