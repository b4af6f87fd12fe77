"""Frames: slice axis choice, volume <-> frame stacks, thinning, intensity normalisation, PNG layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from MedGSLib import frames as fr
from MedGSLib import io
from MedGSLib.errors import InputError, OutputExistsError
from MedGSLib.geometry import Geometry, Volume, numpy_axis

Image = pytest.importorskip("PIL.Image")


# --------------------------------------------------------------------------- choose_axis


@pytest.mark.parametrize(
    "spacing, expected",
    [
        ((1.0, 1.0, 3.0), 2),
        ((3.0, 1.0, 1.0), 0),
        ((1.0, 4.0, 2.0), 1),
        ((1.0, 1.0, 1.0), 2),  # all equal: k
        ((2.0, 2.0, 1.0), 1),  # i/j tie: the later one
        ((1.0, 0.9999999, 0.9999999), 2),  # float32 header noise is a tie, not a choice
        ((0.78125, 0.78125, 6.5), 2),
    ],
)
def test_choose_axis_auto(spacing, expected):
    assert fr.choose_axis(Geometry(spacing)) == expected


@pytest.mark.parametrize("spacing, expected", [
    ((1.0, 0.9995, 0.9995), 2),    # within the tolerance of 1e-3: a tie, k
    ((1.0, 0.998, 0.998), 0),      # outside it: i is thicker
])
def test_every_copy_of_the_auto_axis_rule_agrees(spacing, expected):
    """frames.choose_axis owns the rule; labels, the evaluation protocol and the Slicer combo box
    (export.auto_axis) call it. They disagreed for (1.0, 0.9995, 0.9995): 2, 0 and "I"."""
    import sys
    from pathlib import Path
    from MedGSLib import labels
    from MedGSLib.evaluation import protocol
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "MedGS"))
    try:
        from MedGSLogicLib import export
    finally:
        sys.path.pop(0)

    class Node:     # the one vtkMRMLVolumeNode method auto_axis reads
        def GetIJKToRASMatrix(self, m):
            for r, c, v in ((0, 0, -spacing[0]), (1, 1, -spacing[1]), (2, 2, spacing[2]), (3, 3, 1.0)):
                m.SetElement(r, c, v)

    g = Geometry(spacing)
    lab = Volume(np.zeros((2, 2, 2), np.uint8), g, "labels")
    assert fr.auto_axis(spacing) == fr.choose_axis(g) == expected
    assert labels._default_axis(lab) == protocol.choose_slice_axis(g) == expected
    pytest.importorskip("vtk")
    assert export.auto_axis(Node()) == "IJK"[expected]


def test_choose_axis_explicit():
    g = Geometry((1.0, 1.0, 5.0))
    for given, expected in [(0, 0), (1, 1), (2, 2), ("i", 0), ("J", 1), (" k ", 2), ("1", 1), (np.int64(0), 0)]:
        assert fr.choose_axis(g, given) == expected
    assert fr.choose_axis(g, "AUTO") == 2
    for bad in (3, -1, "w", True, 1.5, None, "auto-ish"):
        with pytest.raises(InputError, match="axis must be"):
            fr.choose_axis(g, bad)


def test_choose_axis_on_real_thick_slice_case(shared_data):
    v = io.read_volume(shared_data / "mr_tumor1_image.nrrd")
    axis = fr.choose_axis(v.geometry)
    assert axis == 2 and fr.to_frames(v.array, axis).shape == (25, 256, 256)


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize("image_axis", [0, 1, 2])
def test_to_frames_and_back(image_axis):
    a = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # (Z, Y, X), every value distinct
    f = fr.to_frames(a, image_axis)
    n = numpy_axis(image_axis)
    assert f.shape[0] == a.shape[n]
    assert f.shape[1:] == tuple(s for i, s in enumerate(a.shape) if i != n)  # remaining axes, in order
    for k in range(f.shape[0]):
        np.testing.assert_array_equal(f[k], np.take(a, k, axis=n))
    assert np.shares_memory(f, a)  # a view, no copy of a large volume
    back = fr.from_frames(f, image_axis)
    assert back.shape == a.shape
    np.testing.assert_array_equal(back, a)
    # And the other direction: frames -> volume -> frames.
    g = np.arange(3 * 7 * 8).reshape(3, 7, 8)
    np.testing.assert_array_equal(fr.to_frames(fr.from_frames(g, image_axis), image_axis), g)


def test_frames_known_layout():
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(fr.to_frames(a, 2), a)  # k: the (Y, X) slices themselves
    assert fr.to_frames(a, 0).shape == (4, 2, 3)  # i: frames are (Z, Y) planes
    assert fr.to_frames(a, 0)[3, 1, 2] == a[1, 2, 3]
    assert fr.to_frames(a, 1)[2, 1, 3] == a[1, 2, 3]
    with pytest.raises(InputError, match="3D"):
        fr.to_frames(np.zeros((2, 3)), 2)
    with pytest.raises(InputError, match="axis must be 0, 1 or 2"):
        fr.to_frames(a, 3)


def test_keep_every():
    np.testing.assert_array_equal(fr.keep_every(10, 3), [0, 3, 6, 9])
    np.testing.assert_array_equal(fr.keep_every(5, 1), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(fr.keep_every(3, 2), [0, 2])
    np.testing.assert_array_equal(fr.keep_every(25, 4), [0, 4, 8, 12, 16, 20, 24])
    with pytest.raises(InputError, match="leaves 1; at least 2"):
        fr.keep_every(2, 2)
    for bad_k in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="positive whole number"):
            fr.keep_every(10, bad_k)


# --------------------------------------------------------------------------- Normalizer


def test_normalizer_percentiles_without_background():
    a = np.arange(1, 1001, dtype=np.float32)  # no repeated minimum: no background
    n = fr.Normalizer().fit(a)
    assert n.background is None
    assert n.lo == pytest.approx(np.percentile(a, 0.5)) and n.hi == pytest.approx(np.percentile(a, 99.5))
    out = n.forward(a)
    assert out.dtype == np.float32
    assert out.min() < 0 and out.max() > 1  # not clipped: outliers map outside [0, 1]
    assert n.forward(np.array([n.lo, n.hi])) == pytest.approx([0.0, 1.0])


def test_normalizer_background_maps_to_zero():
    rng = np.random.default_rng(0)
    tissue = rng.integers(20, 121, size=6000).astype(np.uint8)
    a = np.concatenate([np.zeros(4000, np.uint8), tissue])  # 40 % background, like a brain MRI
    n = fr.Normalizer().fit(a)
    assert n.background == 0.0 and n.lo == 0.0
    assert n.hi == pytest.approx(np.percentile(tissue, 99.5))
    assert n.forward(np.zeros(3, np.uint8)) == pytest.approx([0, 0, 0])
    np.testing.assert_array_equal(n.inverse(n.forward(a)), a)
    assert n.inverse(n.forward(a)).dtype == np.uint8
    # Too little of the minimum value to be a background: ordinary percentile.
    sparse = np.concatenate([np.zeros(5, np.uint8), tissue])
    assert fr.Normalizer().fit(sparse).background is None


def test_normalizer_int16_round_trip_exact():
    rng = np.random.default_rng(1)
    hu = rng.integers(-1024, 3072, size=(6, 20, 20)).astype(np.int16)
    hu[0, 0, :5] = [-32768, 32767, -1024, 0, 3071]  # extremes far outside lo..hi
    n = fr.Normalizer().fit(hu)
    back = n.inverse(n.forward(hu), np.int16)
    assert back.dtype == np.int16
    assert np.abs(back.astype(np.int32) - hu).max() <= 1
    np.testing.assert_array_equal(back, hu)  # in fact exact: float32 has room for 16 bits


def test_normalizer_inverse_dtypes_round_and_clip():
    n = fr.Normalizer(lo=-1000.0, hi=1000.0)
    x = np.array([-0.1, 0.0, 0.25, 0.50026, 1.0, 20.0], np.float32)
    np.testing.assert_array_equal(n.inverse(x, np.int16), [-1200, -1000, -500, 1, 1000, 32767])
    np.testing.assert_array_equal(n.inverse(x, np.uint8), [0, 0, 0, 1, 255, 255])
    f = n.inverse(x, np.float32)
    assert f.dtype == np.float32 and f[2] == pytest.approx(-500.0)
    assert n.inverse(x).dtype == np.float32  # never fitted: float32 by default


def test_normalizer_on_real_ct(shared_data):
    ct = io.read_volume(shared_data / "ct_abdomen3mm_image.nii.gz").array
    n = fr.Normalizer().fit(ct)
    assert n.dtype == "int16"
    assert -1100 <= n.lo < -900 and 100 < n.hi < 1300  # air .. bright tissue, in HU
    np.testing.assert_array_equal(n.inverse(n.forward(ct)), ct)


def test_normalizer_dict_round_trip_and_errors():
    n = fr.Normalizer().fit(np.arange(-50, 500, dtype=np.int16))
    d = json.loads(json.dumps(n.to_dict()))  # what a checkpoint / run.json holds
    m = fr.Normalizer.from_dict(d)
    assert m == n
    x = np.linspace(-0.2, 1.2, 9, dtype=np.float32)
    np.testing.assert_array_equal(m.inverse(x), n.inverse(x))
    with pytest.raises(InputError, match="unknown normaliser fields"):
        fr.Normalizer.from_dict({**d, "gamma": 2})
    with pytest.raises(InputError, match="must be greater"):
        fr.Normalizer.from_dict({**d, "hi": d["lo"]})
    const = fr.Normalizer().fit(np.full((3, 3), 7.0))
    assert const.hi > const.lo and const.inverse(const.forward(np.full(2, 7.0)), np.float64) == pytest.approx([7, 7])
    with pytest.raises(InputError, match="NaN"):
        fr.Normalizer().fit(np.array([1.0, np.nan]))


# --------------------------------------------------------------------------- PNG layout


def _frames(f=5, h=6, w=7) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((f, h, w)).astype(np.float32)


def test_png_layout_round_trip(tmp_path):
    frames = _frames()
    root = fr.write_png_frames(frames, tmp_path / "case")
    names = sorted(p.name for p in (root / "original").iterdir())
    assert names == ["0000.png", "0001.png", "0002.png", "0003.png", "0004.png"]
    assert sorted(p.name for p in (root / "mirror").iterdir()) == names
    back = fr.read_png_frames(root)
    assert back.shape == frames.shape and back.dtype == np.float32
    assert np.abs(back - frames).max() <= 0.5 / 255 + 1e-7  # 8-bit rounding only
    with Image.open(root / "original" / "0002.png") as im:
        assert im.mode == "L"
        orig = np.asarray(im)
    with Image.open(root / "mirror" / "0002.png") as im:
        np.testing.assert_array_equal(np.asarray(im), orig[:, ::-1])  # horizontal flip
    np.testing.assert_array_equal(fr.read_png_frames(root / "original"), back)  # the folder itself works too
    with pytest.raises(OutputExistsError, match="already holds PNG frames"):
        fr.write_png_frames(frames, root)
    fr.write_png_frames(frames[:3], root, overwrite=True)
    assert fr.read_png_frames(root).shape[0] == 3  # stale frames 3 and 4 are gone
    assert [p for p in (root / "original").iterdir() if ".tmp-" in p.name] == []


def test_png_frames_without_mirror_and_clipping(tmp_path):
    frames = np.array([[[-0.5, 0.0, 1.0, 2.0]], [[0.5, 0.25, 0.75, 1.0]]], np.float32)
    root = fr.write_png_frames(frames, tmp_path / "c", mirror=False)
    assert not (root / "mirror").exists()
    back = fr.read_png_frames(root)
    np.testing.assert_allclose(back[0, 0], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(back[1, 0], [128 / 255, 64 / 255, 191 / 255, 1.0])


def test_read_png_frames_missing_index_and_bad_sizes(tmp_path):
    root = fr.write_png_frames(_frames(4), tmp_path / "c", mirror=False)
    (root / "original" / "0002.png").unlink()
    with pytest.raises(InputError, match=r"missing frame 0002\.png"):
        fr.read_png_frames(root)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(root / "original" / "0002.png")
    with pytest.raises(InputError, match=r"0002\.png is 9x9 but frame 0000 is 7x6"):
        fr.read_png_frames(root)
    with pytest.raises(InputError, match="no frames named"):
        fr.read_png_frames(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        fr.read_png_frames(tmp_path / "absent")


def test_read_png_colour_and_16_bit(tmp_path):
    folder = tmp_path / "c" / "original"
    folder.mkdir(parents=True)
    grey_rgb = np.stack([np.full((2, 3), 100, np.uint8)] * 3, axis=-1)  # upstream writes grey as RGB
    Image.fromarray(grey_rgb).save(folder / "0000.png")
    colour = np.zeros((2, 3, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 200, 100, 50
    Image.fromarray(colour).save(folder / "0001.png")
    Image.fromarray(np.full((2, 3), 65535 // 2, np.uint16)).save(folder / "0002.png")
    back = fr.read_png_frames(tmp_path / "c")
    np.testing.assert_allclose(back[0], 100 / 255)
    np.testing.assert_allclose(back[1], (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, rtol=1e-6)
    np.testing.assert_allclose(back[2], (65535 // 2) / 65535, rtol=1e-6)


def test_render_names_and_values(tmp_path):
    images = np.linspace(0, 1, 7 * 2 * 2, dtype=np.float32).reshape(7, 2, 2)
    paths = fr.write_render_pngs(images, tmp_path / "render_img", 3)
    assert [p.name for p in paths] == [
        "00000_0.png", "00000_1.png", "00000_2.png",
        "00001_0.png", "00001_1.png", "00001_2.png",
        "00002_0.png",
    ]
    assert fr.render_name(3 * 12 + 2, 3) == "00012_2.png"
    with Image.open(paths[4]) as im:  # image 4 = frame 1, sub-step 1
        np.testing.assert_array_equal(np.asarray(im), np.rint(images[4] * 255).astype(np.uint8))
    with pytest.raises(OutputExistsError):
        fr.write_render_pngs(images, tmp_path / "render_img", 3)
    with pytest.raises(InputError, match="positive whole number"):
        fr.write_render_pngs(images, tmp_path / "other", 0)
