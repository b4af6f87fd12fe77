"""PNG figures of the evaluation report, drawn with OpenCV only.

OpenCV is already needed by the optical-flow baseline, so the report adds no plotting
dependency (matplotlib is not installed in Slicer's Python, nor on the GPU boxes).
"""
from __future__ import annotations

import math

import numpy as np

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_MEDGS_COLOUR = (40, 39, 214)       # red (BGR), for MedGS only
# One fixed colour (BGR) per method, so a method looks the same in every chart.
_METHOD_COLOURS = {
    "linear": (180, 119, 31), "bspline": (14, 127, 255), "lanczos": (148, 103, 189), "nearest": (44, 160, 44),
    "optflow": (189, 103, 148), "shape-linear": (75, 86, 140), "shape-cubic": (194, 119, 227),
    "contour": (127, 127, 127), "medgs": _MEDGS_COLOUR,
}
_SPARE_COLOURS = [(34, 189, 188), (207, 190, 23), (0, 0, 0)]


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("OpenCV could not encode the figure as PNG")
    return buf.tobytes()


def _text(img, text, org, scale=0.5, colour=(0, 0, 0), thickness=1):
    import cv2

    cv2.putText(img, text, org, _FONT, scale, colour, thickness, cv2.LINE_AA)


def _text_width(text, scale=0.5, thickness=1) -> int:
    import cv2

    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


def _to_display(slice01: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    g = np.clip(slice01, 0.0, 1.0) * 255.0
    g = cv2.resize(g.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(np.round(g).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _error_display(err: np.ndarray, vmax: float, width: int, height: int) -> np.ndarray:
    import cv2

    e = np.clip(np.abs(err) / max(vmax, 1e-12), 0.0, 1.0) * 255.0
    e = cv2.resize(e.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap(np.round(e).astype(np.uint8), cv2.COLORMAP_INFERNO)


def slice_figure(entry: dict, value_range: tuple[float, float], pixel_aspect: float, title: str,
                 methods=("linear", "bspline", "medgs"), psnr: dict | None = None) -> np.ndarray:
    """One held-out slice: truth and each method (top), |error| maps on one scale (bottom).

    `entry` holds "truth" and method -> 2D arrays in original units; `pixel_aspect` is
    d_row / d_col so the picture has the true physical proportions.
    """
    lo, hi = value_range
    scale = (hi - lo) or 1.0
    truth = (entry["truth"] - lo) / scale
    shown = [m for m in methods if m in entry]
    h0, w0 = truth.shape
    # Physical proportions, then scaled so that each panel is about 256 pixels tall.
    phys_h, phys_w = h0 * pixel_aspect, float(w0)
    zoom = 256.0 / max(phys_h, 1e-6)
    ph, pw = int(round(phys_h * zoom)), int(round(phys_w * zoom))
    if pw > 400:   # very wide slices: cap the panel width instead
        zoom = 400.0 / phys_w
        ph, pw = int(round(phys_h * zoom)), 400
    ph, pw = max(ph, 32), max(pw, 32)
    pad, head, label_h = 10, 34, 22
    cols = 1 + len(shown)
    fig_w = pad + cols * (pw + pad)
    fig_h = head + 2 * (label_h + ph) + 2 * pad + 26
    img = np.full((fig_h, fig_w, 3), 255, np.uint8)
    _text(img, title, (pad, 22), 0.55, (0, 0, 0), 1)
    preds = {m: (entry[m] - lo) / scale for m in shown}
    errs = {m: np.clip(preds[m], 0, 1) - np.clip(truth, 0, 1) for m in shown}
    # One colour scale for every error map: the 99th percentile of the largest error.
    vmax = max([float(np.percentile(np.abs(e), 99)) for e in errs.values()] + [1e-3])
    y1 = head + label_h
    y2 = y1 + ph + pad + label_h
    for c, name in enumerate(["truth"] + shown):
        x = pad + c * (pw + pad)
        panel = truth if name == "truth" else preds[name]
        caption = "truth (held out)" if name == "truth" else name
        if psnr and name in psnr and psnr[name] is not None:
            caption += f"  {psnr[name]:.2f} dB"
        colour = _MEDGS_COLOUR if name == "medgs" else (0, 0, 0)
        _text(img, caption, (x, y1 - 6), 0.45, colour, 1)
        img[y1:y1 + ph, x:x + pw] = _to_display(panel, pw, ph)
        if name != "truth":
            _text(img, f"|error| {name}", (x, y2 - 6), 0.45, colour, 1)
            img[y2:y2 + ph, x:x + pw] = _error_display(errs[name], vmax, pw, ph)
    # Colour bar of the error maps under the truth column.
    x = pad
    bar = np.linspace(0, 255, pw).astype(np.uint8)[None, :].repeat(12, axis=0)
    import cv2

    img[y2 + 10:y2 + 22, x:x + pw] = cv2.applyColorMap(bar, cv2.COLORMAP_INFERNO)
    _text(img, "|error| scale", (x, y2 - 6), 0.45)
    _text(img, "0", (x, y2 + 38), 0.4)
    right = f"{vmax:.3f}"
    _text(img, right, (x + pw - _text_width(right, 0.4), y2 + 38), 0.4)
    _text(img, "(intensity in [0,1] units)", (x, y2 + 54), 0.35)
    return img


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-9 * span:
        ticks.append(round(t, 10))
        t += step
    return ticks


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str,
               ylabel: str, highlight: str | None = "medgs") -> np.ndarray:
    """Lines with markers, one per series (name -> [(x, y), ...]), with a legend on the right."""
    import cv2

    w, h = 760, 440
    left, right, top, bottom = 70, 190, 40, 60
    img = np.full((h, w, 3), 255, np.uint8)
    _text(img, title, (left, 25), 0.6)
    pts = [(x, y) for s in series.values() for x, y in s if y is not None and math.isfinite(y)]
    if not pts:
        _text(img, "no finite values to plot", (left, h // 2), 0.6)
        return img
    xs = sorted({p[0] for p in pts})
    ymin, ymax = min(p[1] for p in pts), max(p[1] for p in pts)
    margin = (ymax - ymin) * 0.1 or max(abs(ymax) * 0.05, 0.01)
    ymin, ymax = ymin - margin, ymax + margin
    xmin, xmax = (xs[0] - 0.5, xs[-1] + 0.5)
    pw, ph = w - left - right, h - top - bottom

    def px(x, y):
        return (int(round(left + (x - xmin) / (xmax - xmin) * pw)),
                int(round(top + (ymax - y) / (ymax - ymin) * ph)))

    for t in _nice_ticks(ymin, ymax):
        _, yy = px(xmin, t)
        cv2.line(img, (left, yy), (left + pw, yy), (225, 225, 225), 1)
        label = f"{t:g}"
        _text(img, label, (left - 8 - _text_width(label, 0.4), yy + 4), 0.4)
    for x in xs:
        xx, _ = px(x, ymin)
        cv2.line(img, (xx, top + ph), (xx, top + ph + 5), (0, 0, 0), 1)
        label = f"{x:g}"
        _text(img, label, (xx - _text_width(label, 0.45) // 2, top + ph + 22), 0.45)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    _text(img, xlabel, (left + pw // 2 - _text_width(xlabel, 0.5) // 2, h - 15), 0.5)
    # Vertical y label: draw horizontally then rotate.
    lab = np.full((20, _text_width(ylabel, 0.5) + 4, 3), 255, np.uint8)
    _text(lab, ylabel, (2, 15), 0.5)
    lab = cv2.rotate(lab, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = max(top + ph // 2 - lab.shape[0] // 2, 0)
    img[y0:y0 + lab.shape[0], 4:4 + lab.shape[1]] = lab[: h - y0]
    spare = 0
    for i, (name, s) in enumerate(series.items()):
        colour = _MEDGS_COLOUR if name == highlight else _METHOD_COLOURS.get(name)
        if colour is None:
            colour = _SPARE_COLOURS[spare % len(_SPARE_COLOURS)]
            spare += 1
        thick = 3 if name == highlight else 2
        good = [(x, y) for x, y in sorted(s) if y is not None and math.isfinite(y)]
        pix = [px(x, y) for x, y in good]
        for a, b in zip(pix, pix[1:]):
            cv2.line(img, a, b, colour, thick, cv2.LINE_AA)
        for p in pix:
            cv2.circle(img, p, 4, colour, -1, cv2.LINE_AA)
        ly = top + 12 + i * 22
        cv2.line(img, (left + pw + 15, ly - 4), (left + pw + 40, ly - 4), colour, thick, cv2.LINE_AA)
        _text(img, name, (left + pw + 48, ly), 0.45)
    return img
