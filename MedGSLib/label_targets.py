"""In-between label targets: shape interpolation of the motion-compensated neighbours.

The label heads learn, between two annotated frames a and b, toward a mask at fraction alpha.
Blending the two masks after warping them by the image's half-way field (flow.blend) is a
cross-fade wherever the warp does not align them exactly: the 0.5 level then lies anywhere in
the part where the warped masks disagree. Shape-based interpolation moves the boundary instead:
each label's signed distance (positive inside) is blended and the mask is where the blend is
positive. Here the two signed distances are first carried by the same field as the masks were,

    s = (1 - alpha) sd_a(x - alpha d) + alpha sd_b(x + (1 - alpha) d),    target = [s > 0],

so the motion explains the shift and the distances the change of shape. A label absent on one
side has sd = -clip there and shrinks to nothing instead of fading out.

Signed distances are in pixels of the frames, clipped to +-clip (`signed_distance`, also the
shape-based baselines' rule), computed once on the host per label and annotated frame and kept as float16 on the
trainer's device (half the memory of the float32 masks it already holds).
"""
from __future__ import annotations

import math

# Pixels. Farther than this from a boundary the distance says no more: a label gone on one side
# is gone at alpha = 0.5 where it was more than this deep. Of 2, 4 and 8 px, 4 gave the cubic
# target its best mean held-out Dice on the dev cases (results/bench_label_targets_cpu.md).
CLIP_PX = 4.0


def signed_distance(mask2d, spacing2d, clip: float):
    """2D signed distance in the units of `spacing2d` (mm for the shape-based baselines, pixels
    here), positive inside, clipped to [-clip, clip].

    Inside: distance to the nearest background pixel; outside: minus the distance to the
    nearest mask pixel. Both are at least one pixel, so the zero level lies between them.
    """
    import numpy as np
    from scipy.ndimage import distance_transform_edt

    if not mask2d.any():
        return np.full(mask2d.shape, -clip, dtype=np.float32)
    if mask2d.all():
        return np.full(mask2d.shape, clip, dtype=np.float32)
    inside = distance_transform_edt(mask2d, sampling=spacing2d)
    outside = distance_transform_edt(~mask2d, sampling=spacing2d)
    sd = np.where(mask2d, inside, -outside)
    return np.clip(sd, -clip, clip).astype(np.float32)


def signed_distances(masks, clip: float = CLIP_PX, frames=None):
    """masks [L, F, H, W] (0/1, torch, any device) -> float16 signed distances [L, A, H, W] on the
    same device, of the A `frames` (default all), without copying the masks of all labels at once.

    Each label is processed in its bounding box over the A frames grown by the clip: beyond
    it the distance to the label is more than `clip`, so the clipped value -clip is exact there.
    """
    import numpy as np
    import torch
    frames = list(range(masks.shape[1])) if frames is None else [int(f) for f in frames]
    L, A, (h, w) = masks.shape[0], len(frames), masks.shape[2:]
    out = torch.full((L, A, h, w), -float(clip), dtype=torch.float16)
    margin = math.ceil(clip) + 1
    for c in range(L):
        m = (masks[c, frames] > 0.5).cpu().numpy()
        rows = np.flatnonzero(m.any(axis=(0, 2)))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(m.any(axis=(0, 1)))
        ys = slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h))
        xs = slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w))
        if masks.device.type == "cuda":     # on the GPU: the same values without a host round trip
            box = clipped_distances(masks[c, frames][:, ys, xs] > 0.5, clip)
        else:
            box = torch.from_numpy(np.stack([signed_distance(m[f, ys, xs], (1.0, 1.0), clip) for f in range(A)]))
        out[c, :, ys, xs] = box.to(out.device, torch.float16)
    return out.to(masks.device)


def clipped_distances(mask, clip: float):
    """`signed_distance` in pixels of a stack of masks [A, h, w] (bool, torch, any device) by
    direct search: clipped at `clip`, the distance to the nearest pixel of the other kind is the
    shortest offset within `clip` that reaches one (pixels outside the frame count as neither, as
    in the Euclidean distance transform). About 50 shifted comparisons for the default clip: fast
    on a GPU, where scipy's transform would need the masks on the host."""
    import torch
    A, h, w = mask.shape
    r = int(math.floor(clip))
    inside = mask.to(torch.int8)
    padded = torch.nn.functional.pad(inside, (r, r, r, r), value=-1)    # -1: outside the frame
    to_out = torch.full((A, h, w), float(clip), device=mask.device)     # inside: nearest background
    to_in = torch.full((A, h, w), float(clip), device=mask.device)      # outside: nearest mask pixel
    offsets = sorted(((math.hypot(dy, dx), dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)),
                     reverse=True)
    for d, dy, dx in offsets:   # farthest first: a nearer offset overwrites
        if d == 0 or d > clip:
            continue
        other = padded[:, r + dy:r + dy + h, r + dx:r + dx + w]
        to_out = torch.where(mask & (other == 0), d, to_out)
        to_in = torch.where(~mask & (other == 1), d, to_in)
    return torch.where(mask, to_out, -to_in)


def _masks_from(s, band: float):
    """Blended distances -> target: [s > 0], or with `band` > 0 a ramp 0..1 over s in [-band/2, band/2]."""
    if band > 0:
        return (0.5 + s / band).clamp(0, 1)
    return (s > 0).to(s.dtype)


def shape_between(sd_a, sd_b, d, alpha, band: float = 0.0):
    """Motion-compensated shape interpolation: sd_a, sd_b [P, C, H, W] signed distances of the
    pair's frames, d [P, 2, H, W] their half-way field (flow.estimate), alpha [P] -> masks [P, C, H, W]."""
    from .flow import warp
    al = alpha.view(-1, 1, 1, 1).float()
    s = (1 - al) * warp(sd_a.float(), -al * d) + al * warp(sd_b.float(), (1 - al) * d)
    return _masks_from(s, band)


def _cubic_weights(t, g0, g1, g2):
    """Weights of p0..p3 for the Catmull-Rom spline between p1 (t = 0) and p2 (t = 1), the frames
    g0, g1, g2 apart (Hermite form: the tangent at p1 is (p2 - p0) / (g0 + g1), at p2
    (p3 - p1) / (g1 + g2), per frame; all gaps 1 is the uniform spline)."""
    t2, t3 = t * t, t * t * t
    h00, h10, h01, h11 = 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, 3 * t2 - 2 * t3, t3 - t2
    a, b = h10 * g1 / (g0 + g1), h11 * g1 / (g1 + g2)
    return -a, h00 - b, h01 + a, b


def shape_between_cubic(sd, d_prev, d, d_next, alpha, gaps=None, band: float = 0.0):
    """The cubic variant: sd [4, P, C, H, W] signed distances of four consecutive annotated frames
    (the pair is sd[1], sd[2]); d the pair's field, d_prev that of (sd[0], sd[1]), d_next that of
    (sd[2], sd[3]); gaps [3, P] the frame distances between them (None: all 1); alpha [P] -> masks [P, C, H, W].

    The outer frames are carried onto their neighbour's grid by their own field first (the
    fields chained per gap), then like the inner ones; a Catmull-Rom spline through the four
    carried distances replaces the linear blend. At the ends of the stack repeat the end frame
    with a zero field (sd[0] = sd[1], d_prev = 0): the usual Catmull-Rom end condition.
    """
    from .flow import warp
    al = alpha.view(-1, 1, 1, 1).float()
    g = [x.view(-1, 1, 1, 1).float() for x in gaps] if gaps is not None else [1.0, 1.0, 1.0]
    p0 = warp(warp(sd[0].float(), -d_prev), -al * d)
    p1 = warp(sd[1].float(), -al * d)
    p2 = warp(sd[2].float(), (1 - al) * d)
    p3 = warp(warp(sd[3].float(), d_next), (1 - al) * d)
    w0, w1, w2, w3 = _cubic_weights(al, *g)
    return _masks_from(w0 * p0 + w1 * p1 + w2 * p2 + w3 * p3, band)


def annotated_quads(annotated, ks):
    """The four annotated frames around each pair k = (ann[k], ann[k+1]) of the sorted
    `annotated` frames, for `shape_between_cubic`: (i0, ia, ib, i3) lists and the gaps [3][P]
    between them. At an end of the stack the end frame is repeated (i0 = ia or i3 = ib) and its
    gap is taken as the pair's own (the usual Catmull-Rom end condition)."""
    ann = list(annotated)
    i0, ia, ib, i3 = [], [], [], []
    for k in ks:
        a, b = ann[k], ann[k + 1]
        ia.append(a)
        ib.append(b)
        i0.append(ann[k - 1] if k > 0 else a)
        i3.append(ann[k + 2] if k + 2 < len(ann) else b)
    gaps = [[(a - p) if p != a else (b - a) for p, a, b in zip(i0, ia, ib)],
            [b - a for a, b in zip(ia, ib)],
            [(q - b) if q != b else (b - a) for q, a, b in zip(i3, ia, ib)]]
    return (i0, ia, ib, i3), gaps


def cubic_between(sd_of, field_of, annotated, ks, alpha, band: float = 0.0):
    """Motion-compensated cubic shape interpolation between the annotated pairs `ks` (indices
    into the sorted `annotated`) at fractions `alpha` [P] -> masks [P, C, H, W].

    sd_of(frames) gives the signed distances [P, C, H, W] of a list of frames (the caller's
    channels); field_of(pairs) the half-way fields [P, 2, H, W] of a list of (a, b) pairs, the
    zero field for (a, a) (the trainer's flow.PairFields.stack). The one construction of this target: the label heads'
    in-between term trains toward it and the self-check can deliver it (selfcheck.choose_labels).
    """
    import torch
    (i0, ia, ib, i3), gaps = annotated_quads(annotated, ks)
    d, d_prev, d_next = field_of(list(zip(ia, ib))), field_of(list(zip(i0, ia))), field_of(list(zip(ib, i3)))
    four = torch.stack([sd_of(i0), sd_of(ia), sd_of(ib), sd_of(i3)])
    g = torch.as_tensor(gaps, device=d.device, dtype=torch.float32)
    return shape_between_cubic(four, d_prev, d, d_next, alpha, g, band)
