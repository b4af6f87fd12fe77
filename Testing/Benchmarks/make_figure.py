"""Turn a slice saved by bench_speed.py --save-slice into the README figure.

    python Testing/Benchmarks/make_figure.py slice.npz Resources/Screenshots/result.png
Panels: truth | linear | cubic B-spline | optical flow (when saved) | MedGS, and below each method
its |error| (x4).
"""
import sys

import numpy as np
from PIL import Image, ImageDraw


def main(src, dst):
    d = np.load(src)
    lo, hi = float(d["lo"]), float(d["hi"])
    win = lambda a: np.clip((a - lo) / (hi - lo), 0, 1)   # noqa: E731
    truth = win(d["truth"])
    names = [n for n in ("linear", "bspline", "optflow", "medgs") if n in d.files]
    cols = [("truth", truth, None)] + [(n, win(d[n]), np.abs(win(d[n]) - truth)) for n in names]
    h, w = truth.shape
    canvas = np.zeros((2 * h + 20, len(cols) * w), np.float32)
    for j, (_, img, err) in enumerate(cols):
        canvas[20:20 + h, j * w:(j + 1) * w] = img
        if err is not None:
            canvas[20 + h:, j * w:(j + 1) * w] = np.clip(4 * err, 0, 1)
    im = Image.fromarray((canvas * 255).astype(np.uint8)).convert("RGB")
    dr = ImageDraw.Draw(im)
    for j, (name, img, err) in enumerate(cols):
        label = name if err is None else f"{name}  |err| mean {err.mean():.4f}"
        dr.text((j * w + 4, 4), label, fill=(255, 220, 0))
    im.save(dst)


if __name__ == "__main__":
    main(*sys.argv[1:3])
