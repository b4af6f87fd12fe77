"""Volume files in and out with their full geometry (spacing, origin, direction).

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr, .seg.nrrd) and MetaImage (.mha, .mhd),
all through SimpleITK. SimpleITK is imported lazily and is optional for NIfTI: a GPU box
with only nibabel reads and writes NIfTI with the same geometry, choosing between the sform
and the qform the way ITK does, so both back ends agree on one file.

Every problem with a file raises `InputError` (or `OutputExistsError`) with one sentence that
names the file. Writes are atomic: the data goes to a temporary file in the target folder and
is moved into place with `os.replace`, so an interrupted or failed write never leaves a
half-written volume under the final name; an OSError there (full disk, read-only mount) is an
`OutputError` naming the file. The engine's JSON (run.json, the worker protocol, eval reports)
goes through `json_safe`/`dumps_json`/`write_json` (strict JSON: NaN -> null), and its torch
checkpoints through `save_torch` (atomic) and `load_torch` (`weights_only=True`). A whole run's
outputs are written as one set by outputs.py on top of these.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, MedGSError, OutputError, OutputExistsError
from .geometry import Geometry, LabelInfo, Volume

# Longest first so that ".seg.nrrd" and ".nii.gz" win over ".nrrd" and ".gz".
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_NIFTI = (".nii", ".nii.gz")
_NRRD = (".seg.nrrd", ".nrrd", ".nhdr")
# Header + separate data file: written through a temporary folder (see _write_detached).
_DETACHED = (".nhdr", ".mhd")

# Integer types tried in order for label maps: the first that holds every value is used.


# --------------------------------------------------------------------------- paths


def output_extension(path: str | os.PathLike) -> str:
    """The full, lower-case volume extension of `path` (".nii.gz", ".seg.nrrd", ".nrrd", ...).

    Raises InputError for anything that is not a supported volume format.
    """
    name = Path(path).name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    raise InputError(
        f"{Path(path).name!r} is not a supported volume file: use one of {', '.join(SUPPORTED_EXTENSIONS)}"
    )


def _stem_and_suffix(path: Path) -> tuple[str, str]:
    """Split a file name into (stem, full extension); unknown extensions use the last suffix."""
    try:
        ext = output_extension(path)
        return path.name[: -len(ext)], path.name[-len(ext):]
    except InputError:
        return path.stem, path.suffix


def volume_stem(path: str | os.PathLike) -> str:
    """The file name without its volume extension (ct.nii.gz -> ct, seg.seg.nrrd -> seg); the one
    rule for output, case and mesh names. Unknown extensions lose their last suffix."""
    return _stem_and_suffix(Path(path))[0]


def _temp_name(path: Path) -> Path:
    """`<name>.tmp-<pid><suffix>` next to `path`: same folder (os.replace stays on one file
    system) and same extension (writers pick the format and compression from it)."""
    stem, suffix = _stem_and_suffix(path)
    return path.with_name(f"{stem}.tmp-{os.getpid()}{suffix}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Context manager for an atomic write of one file.

    Yields a temporary path in the target's folder; write the file there. On normal exit it
    is moved onto `path` with `os.replace`; on any exception it is removed and `path` is left
    as it was. Raises OutputExistsError up front if `path` exists and `overwrite` is False.
    The parent folder is created if needed.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if not tmp.exists():
            raise InputError(f"nothing was written for {path}")
        os.replace(tmp, path)
    except MedGSError:
        raise
    except OSError as err:  # full disk, read-only mount, permissions: the user's to fix
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    finally:
        # Reached with tmp still present only when the write or the replace failed.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_probe(folder) -> None:
    """Create and remove a small file in `folder`; raises the OSError when that is refused."""
    fd, probe = tempfile.mkstemp(prefix=".medgs-write-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_writable(path: str | os.PathLike, overwrite: bool = False, *, volume_format: bool = True) -> Path:
    """Fail now, before hours of training, if `path` could not be written later.

    Checks: a supported volume extension (unless `volume_format=False`) and a writer for it
    (NRRD/MetaImage need SimpleITK), no existing file unless `overwrite`, and a folder that
    exists or can be created and in which a file can actually be created (probed, because
    permission bits do not tell about read-only mounts or ACLs). Returns the absolute path.
    """
    path = Path(path).expanduser().absolute()
    if volume_format:
        _need_backend(path, output_extension(path), "writing")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot create {path.parent}: {folder} is a file, not a folder")
    try:
        # Probe in the nearest existing folder: if that works, missing sub-folders can be made.
        write_probe(folder)
    except OSError as err:
        raise InputError(f"cannot write into {folder}: {err.strerror or err}") from err
    return path


# --------------------------------------------------------------------------- JSON


def json_safe(value: Any) -> Any:
    """Numbers, arrays, paths, tuples -> plain JSON values; NaN and infinity -> None.

    Strict JSON has no NaN: a run.json or protocol line holding one is rejected by most readers
    (Slicer's included), so every JSON the engine writes goes through here.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    return str(value)


def dumps_json(value: Any, *, indent: int | None = None) -> str:
    """`value` as strict JSON text (see json_safe); compact when `indent` is None."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(json_safe(value), allow_nan=False, indent=indent, separators=separators)


def write_json(value: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `value` as strict, indented JSON, atomically; returns the path."""
    path = Path(path)
    text = dumps_json(value, indent=2) + "\n"
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def save_torch(obj: Any, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """torch.save, atomically (a checkpoint is either the old one or the new one, never half)."""
    import torch
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        torch.save(obj, tmp)
    return path


def load_torch(path: str | os.PathLike) -> Any:
    """torch.load with `weights_only=True`: a checkpoint is data, never code to run.

    Raises InputError naming the file when it is missing, damaged or holds anything but
    tensors and plain containers (a crafted pickle is refused, not executed).
    """
    import pickle

    import torch
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"checkpoint {path.name} cannot be loaded as MedGS data: {reason[:200]}") from err


# --------------------------------------------------------------------------- back ends


def _sitk():
    """SimpleITK, or None where it is not installed (GPU boxes have nibabel only)."""
    try:
        import SimpleITK
    except ImportError:
        return None
    return SimpleITK


def _nib():
    try:
        import nibabel
    except ImportError:
        return None
    return nibabel


def _need_backend(path: Path, ext: str, action: str) -> str:
    """'sitk' or 'nibabel' for this extension, or an InputError naming what to install."""
    if _sitk() is not None:
        return "sitk"
    if ext in _NIFTI and _nib() is not None:
        return "nibabel"
    if ext in _NIFTI:
        raise InputError(f"{action} {path.name} needs SimpleITK or nibabel (pip install nibabel)")
    raise InputError(f"{action} {path.name} needs SimpleITK (pip install SimpleITK); NIfTI works with nibabel alone")


# --------------------------------------------------------------------------- reading


def read_volume(path: str | os.PathLike, kind: str = "image") -> Volume:
    """Read a 3D scalar volume with its geometry.

    kind="labels" returns an integer array (float files must hold whole numbers) and, for
    Slicer .seg.nrrd files, the segment names and colours in `Volume.labels`.
    Raises InputError naming the file for: a missing or unreadable file, a truncated file,
    2D or 4D+ data (a trailing singleton 4th dimension is dropped), vector/RGB voxels,
    NaN/Inf values, non-integer label values.
    """
    if kind not in ("image", "labels"):
        raise InputError(f"kind must be 'image' or 'labels', got {kind!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    ext = output_extension(path)
    if ext in _NIFTI:
        nonfinite = _scan_nifti(path)
        if nonfinite:
            raise InputError(_nonfinite_message(path.name, nonfinite))
    if _need_backend(path, ext, "reading") == "sitk":
        array, geometry, meta = _read_sitk(path)
    else:
        array, geometry = _read_nibabel(path)
        meta = {}

    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(_nonfinite_message(path.name, bad))
    labels: dict[int, LabelInfo] = {}
    if kind == "labels":
        array = _as_label_array(array, path.name)
        labels = _segments_from_metadata(meta, path.name)
    return Volume(array, geometry, kind, labels)


def _nonfinite_message(name: str, count: int) -> str:
    return f"{name} has {count} NaN or infinite voxels; fix or mask them before interpolating"


def _read_sitk(path: Path) -> tuple[np.ndarray, Geometry, dict[str, str]]:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        reason = _itk_reason(err)
        if "No such file" in reason:  # MetaImage says this for a damaged header; the file exists
            reason = "the header is damaged or names a missing data file"
        raise InputError(f"{path.name} cannot be read as a volume: {reason}") from err
    meta = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    size = tuple(reader.GetSize())
    _check_shape(path.name, size, reader.GetNumberOfComponents(), meta)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        reason = _itk_reason(err)
        what = "the file is damaged or truncated"
        if path.suffix.lower() in _DETACHED:
            what += ", or its data file is missing"
        elif "No such file" in reason:
            reason = ""  # MetaImage's reason for a short .mha, which does exist
        raise InputError(f"{path.name} could not be read; {what}" + (f" ({reason})" if reason else "")) from err
    if image.GetNumberOfComponentsPerPixel() != 1:
        n = image.GetNumberOfComponentsPerPixel()
        raise InputError(f"{path.name} has {n} values per voxel; a scalar volume is needed")
    array = sitk.GetArrayFromImage(image)
    if np.iscomplexobj(array):
        raise InputError(f"{path.name} holds complex numbers; a real-valued scalar volume is needed")
    dim = image.GetDimension()
    if dim > 3:
        # (t, z, y, x) with t == 1 (checked above): keep the 3D part.
        array = array.reshape(array.shape[-3:])
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    geometry = Geometry(
        tuple(image.GetSpacing())[:3], tuple(image.GetOrigin())[:3], tuple(direction.reshape(-1))
    )
    return np.ascontiguousarray(array), geometry, meta


def _itk_reason(err: Exception) -> str:
    """The informative part of an ITK exception: its last line without source locations,
    object addresses and library prefixes (they are multi-line, most general first)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    reason = lines[-1]
    if "Unable to determine ImageIO reader" in reason:
        return "not a file of a known image format"
    reason = re.sub(r"^\[\w+\]\s*\w+:\s*", "", reason)  # "[nrrd] _nrrdEncodingGzip_read: "
    reason = re.sub(r"^(itk|sitk)?(::)?\s*ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", reason, flags=re.I)
    reason = re.sub(r"^(Reason|Description):\s*", "", reason)
    return reason.rstrip(":. ")[:200] or type(err).__name__


def _check_shape(name: str, size: tuple[int, ...], components: int, meta: dict[str, str]) -> None:
    """size in (x, y, z, t...) order, as ITK and nibabel report it."""
    if components > 1:
        if any(k.startswith("Segment") for k in meta):
            raise InputError(
                f"{name} is a multi-layer segmentation ({components} layers); export it as a labelmap with one layer"
            )
        raise InputError(
            f"{name} has {components} values per voxel (vector or colour image); a scalar volume is needed"
        )
    dims = list(size)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3:
        raise InputError(f"{name} is {len(dims)}D (size {tuple(size)}); a 3D volume is needed")
    if len(dims) > 3:
        raise InputError(
            f"{name} is {len(dims)}D (size {tuple(size)}); a 3D volume is needed (split time series or channels first)"
        )


def _scan_nifti(path: Path) -> int:
    """Check a NIfTI file's data against its header; returns the number of NaN/Inf voxels.

    Two things the readers do not tell us: ITK and nibabel both read a truncated NIfTI
    without complaint (missing voxels come back as zeros), and ITK's NIfTI reader silently
    replaces NaN and Inf by 0. So the file is streamed once here: the (decompressed) size
    must reach the end announced by the header, and float voxels are counted if not finite.
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(540)
            end, offset, float_dtype = _nifti_layout(head, path.name)
            if float_dtype is None and not gz:
                have, nonfinite = os.path.getsize(path), 0
            else:
                have, nonfinite = len(head), 0
                pending = head[offset:] if len(head) > offset else b""
                skip = max(offset - len(head), 0)
                # A truncated gzip stream raises EOFError in this loop.
                while chunk := f.read(1 << 22):
                    have += len(chunk)
                    if float_dtype is None:
                        continue
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    pending += chunk
                    usable = min(len(pending), max(end - (have - len(pending)), 0))
                    usable -= usable % float_dtype.itemsize
                    values = np.frombuffer(pending[:usable], dtype=float_dtype)
                    nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                    pending = pending[usable:]
    except PermissionError as err:
        raise InputError(f"{path.name} cannot be opened: permission denied") from err
    except (EOFError, OSError, zlib.error) as err:
        raise InputError(f"{path.name} is damaged or truncated: {err}") from err
    if have < end:
        raise InputError(f"{path.name} is truncated: {have} bytes of the {end} its header announces")
    return nonfinite


def _nifti_layout(head: bytes, name: str) -> tuple[int, int, np.dtype | None]:
    """(end of voxel data, vox_offset, float dtype or None) from a NIfTI-1 or NIfTI-2 header."""
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0] if len(head) >= 4 else 0
        if size == 348 and len(head) >= 348:
            datatype = struct.unpack(endian + "h", head[70:72])[0]
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            dims = struct.unpack(endian + "8h", head[40:56])
            # Single-file NIfTI-1 data starts at vox_offset, at least 352 (header + extension flag).
            offset = max(int(struct.unpack(endian + "f", head[108:112])[0]), 352)
            break
        if size == 540 and len(head) >= 540:
            datatype = struct.unpack(endian + "h", head[12:14])[0]
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = max(struct.unpack(endian + "q", head[168:176])[0], 544)
            break
    else:
        raise InputError(f"{name} is not a NIfTI file (no valid header)")
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 0 for d in dims[1 : ndim + 1]) or bitpix <= 0:
        raise InputError(f"{name} has an invalid NIfTI header (dim = {list(dims)}, bitpix = {bitpix})")
    voxels = int(np.prod([max(d, 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    # NIfTI datatype codes: 16 = float32, 64 = float64.
    float_dtype = {16: np.dtype(endian + "f4"), 64: np.dtype(endian + "f8")}.get(datatype)
    return offset + voxels * bitpix // 8, offset, float_dtype


def _read_nibabel(path: Path) -> tuple[np.ndarray, Geometry]:
    nib = _nib()
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types (ImageFileError, OSError, ValueError...)
        raise InputError(f"{path.name} cannot be read as a NIfTI volume: {err}") from err
    header = img.header
    if header.get_data_dtype().names is not None:
        raise InputError(f"{path.name} has colour (RGB) voxels; a scalar volume is needed")
    shape = tuple(int(s) for s in img.shape)
    # A NIfTI vector image stores its components in dim 5 (after a singleton time dim).
    components = shape[4] if len(shape) >= 5 else 1
    _check_shape(path.name, shape[:4] + shape[5:] if len(shape) >= 5 else shape, components, {})
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        raise InputError(f"{path.name} could not be read; the file is damaged or truncated ({err})") from err
    slope, inter = header.get_slope_inter()
    if data.dtype == np.float64 and header.get_data_dtype().kind in "iu" and (slope, inter) != (None, None):
        # ITK reads scaled integer NIfTI as float32; match it so both back ends agree.
        data = data.astype(np.float32)
    array = np.ascontiguousarray(data.reshape(shape[:3]).transpose(2, 1, 0))
    return array, _geometry_from_nifti_header(header, path.name)


def _geometry_from_nifti_header(header, name: str) -> Geometry:
    """Pick sform or qform as ITK's NiftiImageIO does, then convert RAS -> LPS.

    ITK prefers the sform when its 3x3 is (after column normalisation) orthonormal and either
    the qform is unset, or sform_code is SCANNER_ANAT (1), or the two transforms agree;
    otherwise it takes the qform. With neither set (Analyze-style files), ITK uses pixdim as
    spacing with a zero origin and the identity direction in LPS.
    """
    qcode = int(header["qform_code"])
    scode = int(header["sform_code"])
    if qcode == 0 and scode == 0:
        zooms = np.abs(np.asarray(header["pixdim"][1:4], dtype=float))
        if np.any(zooms <= 0):
            raise InputError(f"{name} has a zero voxel size in its header")
        return Geometry(tuple(zooms))
    sform = header.get_sform()
    qform = header.get_qform(coded=False)
    use_sform = False
    if scode > 0:
        lin = sform[:3, :3]
        norms = np.linalg.norm(lin, axis=0)
        if np.all(norms > 0):
            d = lin / norms
            orthonormal = np.allclose(d.T @ d, np.eye(3), atol=1e-4)
            if orthonormal and (qcode == 0 or scode == 1 or np.allclose(sform, qform, atol=1e-4)):
                use_sform = True
            elif not orthonormal and qcode == 0:
                raise InputError(f"{name} has a sheared sform and no qform; its orientation cannot be represented")
    affine = sform if use_sform else qform
    if np.any(np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0) <= 0):
        raise InputError(f"{name} has a zero voxel size in its header")
    return Geometry.from_ras_affine(affine)     # NIfTI is RAS; geometry.py owns the flip


def _as_label_array(array: np.ndarray, name: str) -> np.ndarray:
    """Integer label array; whole-number floats are converted, anything else rejected."""
    from .label_arrays import as_label_array
    return as_label_array(array, name)


def smallest_label_dtype(array: np.ndarray) -> np.dtype:
    """The smallest integer dtype (unsigned first) that holds every value of `array`."""
    from .label_arrays import label_dtype
    return np.dtype(np.uint8) if array.size == 0 else label_dtype(array.min(), array.max())


# --------------------------------------------------------------------------- label names


def _segments_from_metadata(meta: dict[str, str], name: str) -> dict[int, LabelInfo]:
    """Slicer .seg.nrrd header fields (SegmentN_Name, _LabelValue, _Color, _Layer) -> labels.

    Files written before Slicer stored `_LabelValue` used value N+1 for segment N.
    """
    indices = sorted({int(m.group(1)) for k in meta if (m := re.fullmatch(r"Segment(\d+)_\w+", k))})
    labels: dict[int, LabelInfo] = {}
    layers = set()
    for i in indices:
        get = lambda field, i=i: meta.get(f"Segment{i}_{field}")  # noqa: E731
        layers.add((get("Layer") or "0").strip())
        try:
            value = int(get("LabelValue")) if get("LabelValue") is not None else i + 1
        except ValueError as err:
            raise InputError(f"{name}: Segment{i}_LabelValue {get('LabelValue')!r} is not an integer") from err
        color = None
        if get("Color"):
            try:
                rgb = [float(c) for c in get("Color").split()[:3]]
                color = tuple(min(max(c, 0.0), 1.0) for c in rgb) if len(rgb) == 3 else None
            except ValueError:
                color = None  # a damaged colour should not stop the run; Slicer picks one
        labels[value] = LabelInfo(value, (get("Name") or f"Segment_{value}").strip(), color)
    if len(layers) > 1:
        raise InputError(f"{name} is a multi-layer segmentation; export it as a labelmap with one layer")
    return labels


def _segment_metadata(volume: Volume, array: np.ndarray) -> dict[str, str]:
    """Volume.labels -> Slicer .seg.nrrd header fields (single layer, one segment per value)."""
    meta = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    n = 0
    for value in sorted(volume.labels):
        if value == 0:
            continue  # 0 is the background, never a segment
        info = volume.labels[value]
        # Extent in (i, j, k) voxel bounds as Slicer writes it; "0 -1 ..." for an empty segment.
        where = np.nonzero(array == value)
        if where[0].size:
            k0, k1 = where[0].min(), where[0].max()
            j0, j1 = where[1].min(), where[1].max()
            i0, i1 = where[2].min(), where[2].max()
            extent = f"{i0} {i1} {j0} {j1} {k0} {k1}"
        else:
            extent = "0 -1 0 -1 0 -1"
        p = f"Segment{n}_"
        meta[p + "ID"] = f"Segment_{value}"
        meta[p + "Name"] = info.name
        meta[p + "NameAutoGenerated"] = "0"
        meta[p + "LabelValue"] = str(value)
        meta[p + "Layer"] = "0"
        meta[p + "Extent"] = extent
        meta[p + "Tags"] = "|"
        if info.color is not None:
            meta[p + "Color"] = " ".join(f"{c:.6g}" for c in info.color)
            meta[p + "ColorAutoGenerated"] = "0"
        n += 1
    return meta if n else {}


def read_color_table(path: str | os.PathLike) -> dict[int, LabelInfo]:
    """Label names and colours from a Slicer (.ctbl/.txt) or FreeSurfer (LUT .txt) table.

    Lines are `value name r g b [a]` with colours 0..255 (returned as 0..1); `#` starts a
    comment. Slicer's CSV tables (header `LabelValue,Name,Color_R,Color_G,Color_B,Color_A`)
    are read too. Raises InputError naming the file and line of anything malformed.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise InputError(f"cannot read colour table {path}: {err.strerror or err}") from err
    lines = [(n, ln.split("#", 1)[0].strip()) for n, ln in enumerate(text.splitlines(), 1)]
    lines = [(n, ln) for n, ln in lines if ln]
    table: dict[int, LabelInfo] = {}
    is_csv = bool(lines) and "," in lines[0][1] and "labelvalue" in lines[0][1].replace(" ", "").lower()
    if is_csv:
        header = [h.strip().lower() for h in lines[0][1].split(",")]
        try:
            iv, iname = header.index("labelvalue"), header.index("name")
            icol = [header.index(c) for c in ("color_r", "color_g", "color_b")]
        except ValueError as err:
            raise InputError(f"{path.name}: CSV colour table header lacks {err}") from err
        rows = [(n, [c.strip() for c in ln.split(",")]) for n, ln in lines[1:]]
        parsed = [(n, r[iv], r[iname], [r[i] for i in icol]) for n, r in rows if len(r) > max(iv, iname, *icol)]
        if len(parsed) != len(rows):
            bad = next(n for n, r in rows if len(r) <= max(iv, iname, *icol))
            raise InputError(f"{path.name} line {bad}: too few columns")
    else:
        parsed = []
        for n, ln in lines:
            parts = ln.split()
            # The name may contain spaces: it is everything between the value and the colour.
            ncol = 4 if len(parts) >= 6 else 3
            if len(parts) < 2 + ncol:
                raise InputError(f"{path.name} line {n}: expected 'value name r g b [a]', got {ln!r}")
            parsed.append((n, parts[0], " ".join(parts[1:-ncol]), parts[-ncol:][:3]))
    for n, value_s, name, rgb_s in parsed:
        try:
            value = int(value_s)
            rgb = tuple(float(c) / 255.0 for c in rgb_s)
        except ValueError as err:
            raise InputError(f"{path.name} line {n}: not a number ({err})") from err
        if value in table:
            raise InputError(f"{path.name} line {n}: label value {value} appears twice")
        if not all(0.0 <= c <= 1.0 for c in rgb):
            raise InputError(f"{path.name} line {n}: colour components must be 0..255")
        table[value] = LabelInfo(value, name, rgb)
    if not table:
        raise InputError(f"{path.name} holds no colour table entries")
    return table


def write_color_table(labels: dict[int, LabelInfo], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `value name r g b a` lines (colours 0..255), readable by Slicer and read_color_table.

    For label maps in formats whose headers cannot carry names (NIfTI, MetaImage).
    """
    path = Path(path)
    lines = ["# MedGS colour table: value name r g b a"]
    for value in sorted(labels):
        info = labels[value]
        rgb = info.color if info.color is not None else (0.5, 0.5, 0.5)
        name = "_".join(info.name.split()) or f"label_{value}"  # Slicer tables need one-word names
        r, g, b = (int(round(min(max(c, 0.0), 1.0) * 255)) for c in rgb)
        lines.append(f"{value} {name} {r} {g} {b} {0 if value == 0 else 255}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- writing


def write_volume(volume: Volume, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `volume` atomically with its geometry; returns the path written.

    Image dtypes are kept (bool -> uint8, float16 -> float32, which no format stores); label
    maps use the smallest integer type that holds their values. NRRD files carry
    `Volume.labels` names and colours as Slicer segmentation fields. Compression is on.
    Raises OutputExistsError if `path` exists and `overwrite` is False.
    """
    path = Path(path).expanduser()
    ext = output_extension(path)
    backend = _need_backend(path, ext, "writing")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    array = _array_for_writing(volume, path.name)
    if backend == "nibabel":
        with atomic_output(path, overwrite=overwrite) as tmp:
            _write_nibabel(array, volume.geometry, tmp)
        return path
    sitk = _sitk()
    image = sitk.GetImageFromArray(array, isVector=False)
    g = volume.geometry
    image.SetSpacing(g.spacing)
    image.SetOrigin(g.origin)
    image.SetDirection(g.direction)
    if ext in _NRRD and volume.kind == "labels" and volume.labels:
        for key, value in _segment_metadata(volume, array).items():
            image.SetMetaData(key, value)

    def write(target: Path) -> None:
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(target))
        writer.SetUseCompression(True)
        try:
            writer.Execute(image)
        except RuntimeError as err:
            raise InputError(f"cannot write {path}: {_itk_reason(err)}") from err

    if ext in _DETACHED:
        _write_detached(path, overwrite, write)
    else:
        with atomic_output(path, overwrite=overwrite) as tmp:
            write(tmp)
    return path


def _array_for_writing(volume: Volume, name: str) -> np.ndarray:
    array = np.asarray(volume.array)
    if volume.kind == "labels":
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise InputError(f"label map for {name} has NaN or infinite values")
        array = _as_label_array(array, name)
        return np.ascontiguousarray(array.astype(smallest_label_dtype(array), copy=False))
    if array.dtype == bool:
        return np.ascontiguousarray(array.astype(np.uint8))
    if array.dtype == np.float16:
        return np.ascontiguousarray(array.astype(np.float32))
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"cannot write {name}: voxel type {array.dtype} is not a real number type")
    return np.ascontiguousarray(array)


def _write_nibabel(array: np.ndarray, geometry: Geometry, target: Path) -> None:
    nib = _nib()
    affine = geometry.ras_affine()
    # nibabel wants (i, j, k) order; a transposed view is enough, it writes Fortran order.
    # dtype given explicitly: nibabel refuses int64 data otherwise.
    img = nib.Nifti1Image(array.transpose(2, 1, 0), affine, dtype=array.dtype)
    # Both codes SCANNER_ANAT, as ITK writes them, so ITK and nibabel read back the same.
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    try:
        nib.save(img, str(target))
    except Exception as err:
        raise InputError(f"cannot write {target.name}: {err}") from err


def _write_detached(path: Path, overwrite: bool, write) -> None:
    """Header + data file formats (.nhdr, .mhd).

    The header names its data file, so both are written with their final names into a
    temporary folder beside `path`, then moved in: data file(s) first, header last, so a
    reader never finds a header whose data is missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, _ = _stem_and_suffix(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        write(tmp_dir / path.name)
        produced = sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name)  # header last
        if not overwrite:
            for p in produced:
                if (path.parent / p.name).exists():
                    raise OutputExistsError(
                        f"{path.parent / p.name} already exists; pass overwrite=True (--overwrite) to replace it"
                    )
        for p in produced:
            os.replace(p, path.parent / p.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
