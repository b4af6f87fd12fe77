"""Label-map handling: ids kept through one-hot/decode, validation errors and warnings, names."""
from __future__ import annotations

import numpy as np
import pytest

from MedGSLib import labels as L
from MedGSLib.errors import InputError
from MedGSLib.geometry import Geometry, LabelInfo, Volume


def _labels_with_values():
    arr = np.zeros((4, 5, 6), dtype=np.uint8)
    arr[0, 1:3, 1:3] = 1
    arr[1:3, 2, 2:5] = 5
    arr[3, 4, 5] = 42
    return arr


def test_label_values_sorted_nonzero():
    arr = _labels_with_values()
    assert L.label_values(arr) == [1, 5, 42]
    assert L.label_values(arr.astype(np.int32)) == [1, 5, 42]
    assert L.label_values(arr.astype(np.float32)) == [1, 5, 42]
    assert L.label_values(np.zeros((2, 2, 2), np.uint16)) == []


def test_one_hot_decode_round_trip_keeps_ids():
    arr = _labels_with_values()
    values = L.label_values(arr)
    oh = L.one_hot(arr, values)
    assert oh.dtype == np.float32 and oh.shape == (3,) + arr.shape
    assert oh.sum() == np.count_nonzero(arr)
    assert np.array_equal(oh[1] == 1, arr == 5)
    back = L.decode(oh, values)
    assert back.dtype == np.uint8
    assert np.array_equal(back, arr)
    # ids are kept as given, not renumbered 1..L
    assert set(np.unique(back)) == {0, 1, 5, 42}


def test_decode_threshold_argmax_and_dtype():
    probs = np.array(
        [
            [0.9, 0.3, 0.49, 0.5, 0.0],  # value 7
            [0.05, 0.6, 0.2, 0.5, 0.0],  # value 300
        ],
        dtype=np.float32,
    ).reshape(2, 1, 1, 5)
    out = L.decode(probs, [7, 300], threshold=0.5)
    # argmax 7; argmax 300; max 0.49 < 0.5 -> background; tie at 0.5 -> earlier channel; all zero -> 0
    assert out.reshape(-1).tolist() == [7, 300, 0, 7, 0]
    assert out.dtype == np.uint16  # 300 does not fit in uint8
    assert L.decode(probs, [7, 300], threshold=0.1).reshape(-1).tolist() == [7, 300, 7, 7, 0]
    assert L.decode(probs, [7, 300], threshold=0.0).reshape(-1).tolist() == [7, 300, 7, 7, 7]
    assert L.decode(probs, [-3, 2]).dtype == np.int8
    with pytest.raises(InputError):
        L.decode(probs, [7])


def test_one_hot_rejects_background_and_duplicates():
    arr = _labels_with_values()
    with pytest.raises(InputError):
        L.one_hot(arr, [0, 1])
    with pytest.raises(InputError):
        L.one_hot(arr, [5, 5])


def _vol(arr, geometry=None, labels=None):
    return Volume(arr, geometry or Geometry((1.0, 1.0, 3.0)), "labels", labels or {})


def test_validate_geometry_mismatch_raises():
    arr = _labels_with_values()
    image = Volume(np.zeros(arr.shape, np.float32), Geometry((1.0, 1.0, 3.0)))
    moved = _vol(arr, Geometry((1.0, 1.0, 3.0), origin=(0.0, 5.0, 0.0)))
    with pytest.raises(InputError, match="origin"):
        L.validate_labels(moved, image)
    other_spacing = _vol(arr, Geometry((1.0, 1.2, 3.0)))
    with pytest.raises(InputError, match="spacing"):
        L.validate_labels(other_spacing, image)
    wrong_shape = _vol(np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(InputError, match="grid"):
        L.validate_labels(wrong_shape, image)


def test_validate_float_and_empty_raise():
    arr = _labels_with_values().astype(np.float32)
    warnings = L.validate_labels(_vol(arr), None)  # whole-number floats are fine
    assert len(warnings) == 2  # labels 1 and 42 each lie in a single slice
    arr[0, 0, 0] = 0.4
    with pytest.raises(InputError, match="non-integer"):
        L.validate_labels(_vol(arr), None)
    with pytest.raises(InputError, match="empty"):
        L.validate_labels(_vol(np.zeros((3, 3, 3), np.uint8)), None)


def test_validate_warns_for_labels_in_fewer_than_two_kept_slices():
    arr = np.zeros((10, 8, 8), dtype=np.uint8)  # slice axis k = numpy axis 0 (largest spacing)
    arr[0:10, 2:4, 2:4] = 1  # everywhere
    arr[4, 6, 6] = 2  # only slice 4
    arr[3, 0, 0] = 3  # only slice 3
    image = Volume(np.zeros(arr.shape, np.float32), Geometry((1.0, 1.0, 3.0)))
    warnings = L.validate_labels(_vol(arr, labels={2: LabelInfo(2, "nodule")}), image, kept_indices=[0, 2, 4, 6, 8])
    assert len(warnings) == 2
    assert any("label 2 (nodule)" in w and "only 1 kept slice" in w and "slice 4" in w for w in warnings)
    assert any("label 3" in w and "no kept slice" in w for w in warnings)
    # along another axis (image axis 0 = numpy axis 2) label 2 is in column 6 only
    w_axis0 = L.validate_labels(_vol(arr), image, kept_indices=range(8), axis=0)
    assert len(w_axis0) == 2  # labels 2 and 3 each occupy a single column
    # default: every slice kept along the largest-spacing axis (k); 2 and 3 sit in one slice each
    w_all = L.validate_labels(_vol(arr), image)
    assert len(w_all) == 2 and all("only 1 kept slice along axis 2" in w for w in w_all)


def test_sparse_label_values_lists_single_slice_labels():
    arr = np.zeros((10, 4, 4), dtype=np.uint8)
    arr[:, 0, 0] = 1
    arr[4, 1, 1] = 2  # one kept slice
    arr[3, 2, 2] = 3  # no kept slice
    arr[4:7, 3, 3] = 4  # kept slices 4 and 6
    assert L.sparse_label_values(arr, [0, 2, 4, 6, 8], 0) == [2]
    assert L.slices_with_value(arr, 0, [4])[4].tolist() == [4, 5, 6]


def test_nearest_fill_carries_sparse_labels():
    kept = np.zeros((3, 2, 2), dtype=np.uint8)
    kept[1, 0, 0] = 9  # the label seen in one kept slice (position 4)
    kept[:, 1, 1] = 1
    positions = [0, 4, 8]
    targets = np.arange(9)
    full = L.nearest_fill(kept, positions, targets)
    assert [int(full[t, 0, 0]) for t in targets] == [0, 0, 0, 9, 9, 9, 9, 0, 0]  # 2 ties to 0, 6 to 4
    base = np.zeros((9, 2, 2), dtype=np.uint8)
    base[:, 0, 1] = 1
    pasted = L.nearest_fill(kept, positions, targets, values=[9], base=base)
    assert np.array_equal(pasted[:, 0, 1], base[:, 0, 1])  # other labels come from base untouched
    assert np.array_equal(pasted[:, 1, 1], np.zeros(9))  # value 1 is not carried
    assert pasted[5, 0, 0] == 9 and pasted[8, 0, 0] == 0


def test_detect_annotated_slices_and_parse_slice_list():
    arr = np.zeros((6, 4, 5), dtype=np.uint8)
    arr[1, 0, 0] = 3
    arr[4, 2, 2] = 1
    assert L.detect_annotated_slices(arr, 0).tolist() == [1, 4]
    assert L.detect_annotated_slices(arr, 2).tolist() == [0, 2]
    assert L.parse_slice_list("0,5,10-20:5") == [0, 5, 10, 15, 20]
    assert L.parse_slice_list(" 3 , 1,2-4") == [1, 2, 3, 4]
    for bad in ("", "a", "5-2", "1-3:0"):
        with pytest.raises(InputError):
            L.parse_slice_list(bad)
    with pytest.raises(InputError, match="out of range"):
        L.parse_slice_list("0,9", count=5)


def test_label_table_sources_and_safe_names():
    arr = _labels_with_values()
    vol = _vol(arr, labels={5: LabelInfo(5, "liver", (0.8, 0.4, 0.2))})
    table = L.label_table(vol)
    assert sorted(table) == [1, 5, 42]
    assert table[5].name == "liver" and table[5].color == (0.8, 0.4, 0.2)
    assert table[1].name == "label_1" and table[42].name == "label_42"
    colours = {table[v].color for v in table}
    assert len(colours) == 3 and all(all(0 <= c <= 1 for c in col) for col in colours)
    # explicit table wins for names; colour falls back to the file's when the table has none
    table2 = L.label_table(vol, {5: "Liver right", 42: (0.0, 1.0, 0.0)})
    assert table2[5].name == "Liver right" and table2[5].color == (0.8, 0.4, 0.2)
    assert table2[42].color == (0.0, 1.0, 0.0) and table2[42].name == "label_42"

    taken: set[str] = set()
    names = [L.safe_filename(n, taken) for n in ("Liver right", "liver/right", "LIVER_RIGHT", "", "con")]
    assert names[0] == "Liver_right"
    assert len({n.lower() for n in names}) == len(names)  # unique even on case-insensitive disks
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for n in names)
    assert names[3] == "label" and names[4] == "con_"
    stems = L.label_filenames({1: LabelInfo(1, "a b"), 2: LabelInfo(2, "a/b"), 3: LabelInfo(3, "")})
    assert stems == {1: "a_b", 2: "a_b_2", 3: "label_3"}


def test_label_table_from_colour_table_file(tmp_path):
    ctbl = tmp_path / "lut.txt"
    ctbl.write_text("# value name r g b a\n0 Background 0 0 0 0\n5 Left-Hippocampus 220 216 20 255\n")
    vol = _vol(_labels_with_values())
    table = L.label_table(vol, ctbl)
    assert table[5].name == "Left-Hippocampus"
    assert np.allclose(table[5].color, (220 / 255, 216 / 255, 20 / 255))
    assert table[1].name == "label_1"


def test_run_carries_a_label_seen_on_one_kept_slice_by_nearest_neighbour():
    """Label 2 exists on slice 2 only: the model cannot interpolate it, the pipeline copies it to
    the output slices nearest to slice 2, warns, and lists it in the run record."""
    pytest.importorskip("torch")
    from MedGSLib import api
    zz, yy, xx = np.mgrid[0:5, 0:24, 0:28]
    image = (np.exp(-((yy - 12) ** 2 + (xx - 10 - zz) ** 2) / 30.0) * 400).astype(np.int16)
    lab = np.zeros(image.shape, np.uint8)
    lab[:, 8:16, 6:14] = 1
    lab[2, 2:5, 20:25] = 2
    geom = Geometry(spacing=(0.8, 0.9, 3.0))
    cfg = api.default_config("fast", "cpu", iterations=3)
    cfg.model.num_points = 300
    res = api.run(Volume(image, geom), labels=Volume(lab, geom, "labels"), factor=2, config=cfg, meshes=False)
    out = res.labels.array
    assert out.shape == (9, 24, 28)
    has2 = [int(i) for i in range(9) if (out[i] == 2).any()]
    assert has2 == [4, 5]          # positions 2.0 and 2.5 (a tie goes to the earlier kept slice)
    np.testing.assert_array_equal(out[4][lab[2] == 2], 2)
    assert res.info["labels_carried_by_nearest"] == [2]
    assert any("label 2" in w and "nearest neighbour" in w for w in res.info["warnings"])

