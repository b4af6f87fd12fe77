"""Upstream MedGS's PNG file layout, a file format kept at the edge (the engine sees arrays).

Training input: `root/original/0000.png ...` (8-bit grey, or grey written as RGB) plus the
horizontally flipped `root/mirror/0000.png ...` upstream's second camera reads. Renders:
`{k:05d}_{i}.png` for frame k and sub-step i of `--interp`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from ..io import atomic_output

_FRAME_NAME = re.compile(r"(\d+)\.png", re.IGNORECASE)


def _pil():
    try:
        from PIL import Image
    except ImportError as err:
        raise InputError("reading and writing PNG frames needs Pillow (pip install Pillow)") from err
    return Image


def read_png_frames(root: str | os.PathLike) -> np.ndarray:
    """Frames of the upstream layout, `root/original/0000.png ...`, as float32 [F, H, W] in [0, 1].

    `root` may also be the `original` folder itself. Grayscale PNGs (8 or 16 bit) are scaled by
    their maximum code value; colour PNGs use the first channel when the channels are equal
    (upstream writes grey as RGB) and the Rec. 601 luminance otherwise. Frames must be
    numbered contiguously from 0 and all have one size.
    """
    Image = _pil()
    root = Path(root).expanduser()
    folder = root / "original" if (root / "original").is_dir() else root
    if not folder.is_dir():
        raise InputError(f"{root} is not a folder of PNG frames (expected {root / 'original'})")
    numbered: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _FRAME_NAME.fullmatch(p.name)
        if m:
            i = int(m.group(1))
            if i in numbered:
                raise InputError(f"{folder} has two files for frame {i}: {numbered[i].name} and {p.name}")
            numbered[i] = p
    if not numbered:
        raise InputError(f"{folder} holds no frames named 0000.png, 0001.png, ...")
    count = len(numbered)
    for i in range(count):
        if i not in numbered:
            raise InputError(f"{folder} is missing frame {i:04d}.png (frames must be numbered 0..{count - 1})")
    frames = []
    for i in range(count):
        path = numbered[i]
        try:
            with Image.open(path) as im:
                im.load()
                frames.append(_png_to_gray(im, path))
        except InputError:
            raise
        except Exception as err:  # PIL raises OSError/SyntaxError/ValueError for damaged files
            raise InputError(f"cannot read {path}: {err}") from err
        if frames[-1].shape != frames[0].shape:
            raise InputError(
                f"{path.name} is {frames[-1].shape[1]}x{frames[-1].shape[0]} but frame 0000 is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}; all frames must have one size"
            )
    return np.stack(frames).astype(np.float32, copy=False)


def _png_to_gray(im, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    a = np.asarray(im)
    if mode in ("1",):
        return a.astype(np.float32)
    if mode in ("L", "LA"):
        g = a[..., 0] if a.ndim == 3 else a
        return g.astype(np.float32) / 255.0
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey: PIL reports mode I;16 or I (32-bit ints holding 16-bit data).
        return a.astype(np.float32) / 65535.0
    if mode in ("RGB", "RGBA"):
        rgb = a[..., :3].astype(np.float32) / 255.0
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    raise InputError(f"{path.name} has PNG mode {mode}, which is not a grey or RGB image")


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame)
    if f.dtype == np.uint8:
        return f
    if np.issubdtype(f.dtype, np.floating) and not np.all(np.isfinite(f)):
        raise InputError("frames to write as PNG have NaN or infinite values")
    return np.clip(np.rint(np.asarray(f, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _write_png(image: np.ndarray, path: Path, overwrite: bool) -> None:
    Image = _pil()
    # the format follows the name (upstream's --extension: .png by default, .jpg works too)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {path.name}: no image format has the extension {path.suffix!r}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        Image.fromarray(_to_uint8(image)).save(tmp, format=fmt)


def write_png_frames(
    frames: np.ndarray, root: str | os.PathLike, *, mirror: bool = True, overwrite: bool = False
) -> Path:
    """Write [F, H, W] frames in [0, 1] (or uint8) as the upstream training layout.

    Creates `root/original/KKKK.png` (8-bit grey) and, with `mirror`, the horizontally flipped
    `root/mirror/KKKK.png` that upstream's second camera uses. Values are clipped to [0, 1]
    and rounded to 8 bits. Refuses to touch a folder that already holds frames unless
    `overwrite` (mixing old and new frames would corrupt the layout). Returns `root`.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise InputError(f"frames must be [F, H, W] with F >= 1, got shape {frames.shape}")
    root = Path(root).expanduser()
    folders = [root / "original"] + ([root / "mirror"] if mirror else [])
    for folder in folders:
        if folder.is_dir() and any(_FRAME_NAME.fullmatch(p.name) for p in folder.iterdir()):
            if not overwrite:
                raise OutputExistsError(f"{folder} already holds PNG frames; pass overwrite=True to replace them")
            # Stale frames beyond the new count would be read back as extra frames.
            for p in folder.iterdir():
                m = _FRAME_NAME.fullmatch(p.name)
                if m and int(m.group(1)) >= frames.shape[0]:
                    p.unlink()
    width = max(4, len(str(frames.shape[0] - 1)))
    for i, frame in enumerate(frames):
        name = f"{i:0{width}d}.png"
        _write_png(frame, root / "original" / name, overwrite)
        if mirror:
            _write_png(np.ascontiguousarray(frame[:, ::-1]), root / "mirror" / name, overwrite)
    return root


def render_name(index: int, factor: int, extension: str = ".png") -> str:
    """Upstream render.py file name of dense image `index` for `--interp factor`:
    `{k:05d}_{i}.png` with index = k * factor + i."""
    k, i = divmod(int(index), int(factor))
    return f"{k:05d}_{i}{extension}"


def write_render_pngs(
    images: np.ndarray, out_dir: str | os.PathLike, factor: int, *, overwrite: bool = False,
    extension: str = ".png",
) -> list[Path]:
    """Write dense renders [N, H, W] (values in [0, 1]) with upstream's render names.

    Image n is frame k = n // factor, sub-step i = n % factor (upstream renders t = (k + i/factor)/F).
    Returns the paths in image order.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise InputError(f"renders must be [N, H, W], got shape {images.shape}")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(f"factor must be a positive whole number, got {factor!r}")
    out_dir = Path(out_dir).expanduser()
    paths = [out_dir / render_name(n, factor, extension) for n in range(images.shape[0])]
    if not overwrite:
        for p in paths:
            if p.exists():
                raise OutputExistsError(f"{p} already exists; pass overwrite=True to replace it")
    for image, p in zip(images, paths):
        _write_png(image, p, overwrite)
    return paths
