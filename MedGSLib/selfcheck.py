"""Self-validation: the run measures its own gain on kept slices it has not trained on.

No ground truth exists in a real run, but the kept slices are truth. A few interior kept frames
are held out of training for most of the schedule (`pick_validation`); on them the trainer
- stops when their PSNR stops rising (early stop on validation, not on training PSNR),
- scores the model against what a user already has between the same neighbours (linear
  interpolation) and against MedGS's own motion-compensated blend (flow.py), and
- chooses what the user gets: the model, a mix of model and blend, or a classical method
  (linear or Lanczos interpolation, with a warning) when the run itself measured the model as
  worse (`choose`). Lanczos is there for smooth anatomy, where a windowed sinc across slices
  can beat every two-slice method by dB (seen on a real 3 mm CT).
Then the held-out frames are folded back in for the rest of training, so the delivered model
has seen every kept slice. The estimate is at twice the kept gap (a held-out frame's
neighbours are two gaps apart); how well it predicts the true gain is measured in the study.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_FRAMES = 5          # fewer kept frames: too few to spare any
EVERY = 6               # one held-out frame per this many kept frames
MIXES = (1.0, 0.75, 0.5, 0.25, 0.0)     # weight of the model in model/blend mixes
LANCZOS_RADIUS = 3      # lobes, as SimpleITK's sitkLanczosWindowedSinc
# choices that deliver no MedGS voxel between kept slices, and their names in messages
CLASSICAL = {"linear": "linear", "lanczos": "Lanczos"}
DELIVER = ("auto", "model", "blend", "linear", "lanczos")     # config.ScheduleConfig.deliver
# the labels' candidates (choose_labels), in the order ties go, and config.ScheduleConfig.deliver_labels
LABEL_CANDIDATES = ("model_1", "model_0.5", "blend", "linear")
DELIVER_LABELS = ("auto", "model", "model_0.5", "blend", "linear")
# One-sided 95 % quantiles of Student's t by degrees of freedom (a smaller df's value is used
# between entries: never less strict); 1.645 beyond.
T95 = ((1, 6.314), (2, 2.920), (3, 2.353), (4, 2.132), (5, 2.015), (6, 1.943), (7, 1.895), (8, 1.860),
       (9, 1.833), (10, 1.812), (12, 1.782), (15, 1.753), (20, 1.725), (30, 1.697), (60, 1.671))


def pick_validation(n_frames: int, annotated: Sequence[int] | None = None) -> list[int]:
    """Interior frames to hold out: evenly spread, never adjacent, never the first or last.

    With a sparse annotation (`annotated` given) the held-out frames are chosen among the
    frames without labels, so that no annotated slice is taken from the label heads.
    """
    if n_frames < MIN_FRAMES:
        return []
    n_val = max(1, (n_frames - 2) // EVERY)
    cand = np.linspace(1, n_frames - 2, n_val + 2)[1:-1] if n_val > 1 else np.array([(n_frames - 1) / 2])
    picked: list[int] = []
    avoid = set(int(a) for a in annotated) if annotated is not None else set()
    for c in cand:
        j = int(round(float(c)))
        for cand_j in (j, j + 1, j - 1, j + 2, j - 2):
            if 1 <= cand_j <= n_frames - 2 and cand_j not in avoid and all(abs(cand_j - p) > 1 for p in picked):
                picked.append(cand_j)
                break
    return sorted(picked)


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pooled PSNR on [0, 1] data (the evaluation protocol's definition)."""
    mse = float(np.mean((np.clip(pred, 0, 1) - np.clip(truth, 0, 1)) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def lanczos_z(frames: np.ndarray, positions) -> np.ndarray:
    """Lanczos windowed-sinc interpolation across slices: frames [F, H, W] at integer positions
    0..F-1, sampled at `positions` (frame units) -> [n, H, W]. Borders replicate; the weights are
    normalised, so a flat stack stays flat; an integer position returns its frame exactly."""
    F = frames.shape[0]
    a = LANCZOS_RADIUS
    out = np.empty((len(positions),) + frames.shape[1:], np.float32)
    for n, p in enumerate(np.asarray(positions, dtype=float)):
        idx = np.floor(p) + np.arange(-a + 1, a + 1)
        w = np.sinc(p - idx) * np.sinc((p - idx) / a)
        out[n] = np.tensordot(w / w.sum(), frames[np.clip(idx, 0, F - 1).astype(int)], 1)
    return out


def held_out_lanczos(frames: np.ndarray, holdout) -> np.ndarray:
    """Lanczos at each held-out frame j from frames j +- 1, 3, 5 (the grid linear's j +- 1 lies
    on: twice the kept gap, j half-way), never from j itself."""
    F = frames.shape[0]
    out = []
    for j in holdout:
        sub = frames[np.clip(j + np.arange(-2 * LANCZOS_RADIUS + 1, 2 * LANCZOS_RADIUS, 2), 0, F - 1)]
        out.append(lanczos_z(sub, [LANCZOS_RADIUS - 0.5])[0])
    return np.stack(out)


def choose(model: np.ndarray, blend: np.ndarray | None, linear: np.ndarray, truth: np.ndarray,
           lanczos: np.ndarray | None = None, interior: dict | None = None, deliver: str = "auto") -> dict:
    """Pick what the user gets from validation frames [V, H, W] (all in [0, 1]).

    Candidates: the model mixed with the motion-compensated blend at the weights MIXES (1.0 is
    the model alone), linear and (when given) Lanczos interpolation. Returns the record written
    to run.json: the PSNR of each candidate, the choice and the estimated gains over linear in dB.

    A classical method replaces MedGS only on evidence: it must also beat MedGS's in-between
    image on `interior` (per-frame PSNRs {"blend", "linear", "lanczos"} of every other interior
    kept frame, `interior_quads`), significantly (`classical_evidence`); if it does not, the
    in-between image itself is delivered (the model, below the classical method on the held-out
    frames, is not). The few held-out frames alone are too few to take MedGS away from the user:
    on the dev cases the in-between image is above linear and Lanczos in every cell at the true
    gap, and one held-out frame at twice a 26 mm gap had delivered linear at a 1.8 dB loss
    (results/bench_proxy_cpu.md, column z2, and bench_flow_cpu.md). The record keeps what the held-out frames
    measured best ("measured_best") so that the user is told, and `deliver` (anything but
    "auto") gives a named candidate instead: "model", "blend", "linear" or "lanczos".
    """
    scores = {"linear": psnr(linear, truth)}
    if lanczos is not None:
        scores["lanczos"] = psnr(lanczos, truth)
    mixes = MIXES if blend is not None else (1.0,)
    for w in mixes:
        scores[f"model_{w:g}"] = psnr(model if w == 1.0 or blend is None else w * model + (1 - w) * blend, truth)
    if blend is not None:
        scores["blend"] = scores.pop("model_0")
    measured = max(scores, key=lambda k: scores[k])
    best, evidence = measured, None
    if measured in CLASSICAL and interior is not None and blend is not None:
        evidence = classical_evidence(interior[measured], interior["blend"])
        evidence["method"] = measured
        if not evidence["significant"]:
            best = "blend"      # the candidate the evidence is about (a mix with the model is not)
    if deliver != "auto":
        name = "model_1" if deliver == "model" else deliver
        if name not in scores:
            from .errors import InputError
            raise InputError(f"deliver={deliver!r} is not a candidate of this run: choose one of "
                             f"{['auto'] + sorted('model' if k == 'model_1' else k for k in scores)}")
        best = name
    weight = 0.0 if best == "blend" else (None if best in CLASSICAL else float(best.split("_")[1]))
    held = scores[best] - scores["linear"]
    rec = {"psnr": scores, "choice": best, "model_weight": weight, "measured_best": measured,
           "model_gain_db": scores["model_1"] - scores["linear"], "heldout_gain_db": held,
           "gain_db": held, "estimate_frames": 0}
    rec.update(estimate(scores, best, interior))
    if evidence is not None:
        rec["evidence"] = evidence
    return rec


def estimate(scores: dict, best: str, interior: dict | None) -> dict:
    """The gain over linear reported to the user: {"gain_db", "estimate_frames"}.

    The held-out frames are few (one in EVERY interior kept frames; one on a 13-slice scan), so
    their gain over linear swings by dB from frame to frame. The part of it that needs no model,
    the choice's basis against linear (the in-between image for a MedGS choice, Lanczos or linear
    for a classical one), is measured on every other interior kept frame instead (`interior`);
    only what the model adds to its basis (choice minus basis) comes from the held-out frames.
    Both are at twice the kept gap. Without `interior` the held-out gain is all there is."""
    base = "blend" if best not in CLASSICAL else best
    if interior is None or base not in interior or base not in scores:
        return {}
    over = np.asarray(interior[base], float) - np.asarray(interior["linear"], float)
    if over.size == 0:
        return {}
    return {"gain_db": float(over.mean()) + scores[best] - scores[base], "estimate_frames": int(over.size)}


def classical_evidence(classical, blend) -> dict:
    """Is a classical method better than the in-between image over these frames? Per-frame PSNR
    differences (dB), one-sided 95 % Student-t bound on their mean: significant when even the
    bound is above 0. Neighbouring frames' differences are correlated, which makes the bound
    narrower than it should be, so this errs toward the classical method (the old rule)."""
    d = np.asarray(classical, float) - np.asarray(blend, float)
    n = int(d.size)
    mean = float(d.mean()) if n else 0.0
    if n < 2:
        return {"frames": n, "mean_db": mean, "lower_db": None, "significant": False}
    t = next((q for df, q in reversed(T95) if df <= n - 1), T95[0][1]) if n - 1 <= T95[-1][0] else 1.645
    lower = mean - t * float(d.std(ddof=1)) / np.sqrt(n)
    return {"frames": n, "mean_db": mean, "lower_db": lower, "significant": bool(lower > 0)}


def quads_across(frames, readable) -> list[tuple[int, int, int, int]]:
    """(j-3, j-1, j+1, j+3) for each frame j: j predicted half-way between j -+ 1 through four
    slices evenly spaced at twice the kept gap, as the delivered in-between image is at the gap.
    An outer frame that `readable(i)` refuses (off the stack, or held out too) is missing: the
    inner one is repeated (flow.four_slices' convention)."""
    return [(j - 3 if readable(j - 3) else j - 1, j - 1, j + 1, j + 3 if readable(j + 3) else j + 1)
            for j in frames]


def interior_quads(n_frames: int) -> list[tuple[int, int, int, int]]:
    """Every other interior kept frame j (odd ones) as `quads_across`: the in-between image and
    the classical methods are scored there, on frames the training may have seen (they need no
    model)."""
    if n_frames < MIN_FRAMES:
        return []
    return quads_across(range(1, n_frames - 1, 2), lambda i: 0 <= i < n_frames)


def frame_psnrs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR of each frame of [V, H, W] stacks (`psnr` per frame, capped at 100 dB so that an
    empty frame every method gets exactly right adds a zero difference, not inf - inf)."""
    err = (np.clip(pred, 0, 1) - np.clip(truth, 0, 1)) ** 2
    return -10.0 * np.log10(np.maximum(err.reshape(len(err), -1).mean(1), 1e-10))


def mean_dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean Dice over the labels present on the validation frames (None where none is)."""
    values = [int(v) for v in np.unique(truth) if v != 0]
    if not values:
        return None
    out = []
    for v in values:
        a, b = pred == v, truth == v
        out.append(2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))
    return float(np.mean(out))


def choose_labels(candidates: dict, truth: np.ndarray, deliver: str = "auto") -> dict:
    """Pick the labels the user gets from decoded validation labels {name: [V, H, W]}.

    Candidates: "model_1" (the label heads), "model_0.5" (heads and in-between labels averaged),
    "blend" (MedGS's motion-compensated in-between labels, label_targets.cubic_between: what the
    heads are trained toward, no model needed) and "linear". "auto" takes the best MedGS
    candidate by mean Dice (ties: the model): a run whose heads learnt little (a short CPU
    schedule) gets the in-between labels. Linear is delivered only when asked for
    (`deliver="linear"`, named in the warning when it measured best): a handful of held-out
    slices is too little to take MedGS's labels away on its own. Returns the run.json fields.
    """
    dice = {k: mean_dice(v, truth) for k, v in candidates.items()}
    if any(v is None for v in dice.values()):
        return {}
    measured = max(dice, key=lambda k: dice[k])
    medgs = [k for k in LABEL_CANDIDATES if k in dice and k != "linear"]
    best = max(medgs, key=lambda k: (dice[k], -medgs.index(k)))
    if deliver != "auto":
        best = "model_1" if deliver == "model" else deliver
        if best not in dice:
            from .errors import InputError
            raise InputError(f"deliver_labels={deliver!r} is not a candidate of this run: choose one of "
                             f"{['auto'] + sorted('model' if k == 'model_1' else k for k in dice)}")
    rec = {"label_dice": dice, "label_choice": best, "label_measured_best": measured,
           "dice_linear": dice["linear"], "dice_gain": dice[best] - dice["linear"]}
    if "model_1" in dice:       # not without label heads (deliver_labels="blend")
        rec["dice_model"] = dice["model_1"]
    return rec


def label_weight(rec: dict) -> float | None:
    """Weight of the label heads in the delivered labels: 1 (heads), 0.5, 0 (in-between labels),
    None (linear)."""
    choice = rec.get("label_choice", "model_1")
    return None if choice == "linear" else (0.0 if choice == "blend" else float(choice.split("_")[1]))


def uses_model(record: dict) -> bool:
    """Does the delivered choice put any model voxel between the kept slices? (Not for the
    in-between image, linear or Lanczos: then the model need not be rendered.)"""
    return record.get("model_weight", 1.0) not in (0.0, None)


def deliver(image: np.ndarray, positions: np.ndarray, frames: np.ndarray, record: dict, fields=None) -> np.ndarray:
    """The rendered stack [n, H, W] turned into the validated choice, in place.

    `positions` are in kept-frame units; `frames` [F, H, W] the kept frames in [0, 1]; `fields`
    the trainer's half-way motion fields of consecutive frames [F-1, 2, H, W] (torch), needed
    when the choice mixes in the motion-compensated blend. Kept positions are left alone.
    """
    w = record.get("model_weight", 1.0)
    if w == 1.0:
        return image
    F = frames.shape[0]
    if w is not None:
        import torch
        from .flow import consecutive_fields, consecutive_quads, image_between
        kept = torch.as_tensor(frames, device=fields.device)
    for n, p in enumerate(np.asarray(positions, dtype=float)):
        i = min(int(np.floor(p)), F - 2)
        a = p - i
        if a < 1e-6 or a > 1 - 1e-6:
            continue
        if w is None:           # a classical method won the validation
            image[n] = (lanczos_z(frames, [p])[0] if record.get("choice") == "lanczos"
                        else (1 - a) * frames[i] + a * frames[i + 1])
            continue
        bl = image_between(kept, consecutive_quads(F, [(i, i + 1)]), consecutive_fields(fields),
                           torch.full((1,), float(a), device=fields.device))
        image[n] = w * image[n] + (1 - w) * bl[0].cpu().numpy()
    return image


def summary(rec: dict) -> str:
    """'estimated gain over linear ... dB (...)': the one text of the estimate (CLI summary line,
    Slicer panel), naming the slices it rests on."""
    dice = f", Dice {rec['dice_gain']:+.3f}" if "dice_gain" in rec else ""
    held = len(rec.get("frames", []))
    on = f"{held} held-out kept slices"
    if rec.get("estimate_frames"):
        on += f" and {rec['estimate_frames']} kept slices at twice the gap"
    return f"estimated gain over linear {rec['gain_db']:+.2f} dB{dice} (self-check on {on})"


def label_warning(rec: dict) -> str:
    """What the user must be told about the labels, or "": linear label interpolation measured
    better on the held-out kept slices than the labels delivered, naming the option that gives it."""
    measured, choice = rec.get("label_measured_best"), rec.get("label_choice")
    if measured != "linear" or choice == "linear":
        return ""
    dice = rec["label_dice"]
    return (f"self-check: on {len(rec.get('frames', []))} held-out kept slices linear label interpolation measured "
            f"Dice {dice['linear'] - dice[choice]:.3f} better than MedGS's labels ({choice}); "
            "--set schedule.deliver_labels=linear gives linear label interpolation")


def self_check_warning(rec: dict) -> str:
    """What the user must be told, or "": each part names the option that gives the other result
    (the one owner of this text: run.json warnings, CLI, Slicer panel)."""
    return " ".join(t for t in (_image_warning(rec), label_warning(rec)) if t)


def _image_warning(rec: dict) -> str:
    """The image's part of `self_check_warning`: a classical method delivered, or MedGS delivered
    although its held-out kept slices measured a classical method better."""
    measured, choice = rec.get("measured_best"), rec.get("choice")
    frames = len(rec.get("frames", []))
    if choice in CLASSICAL:
        name = CLASSICAL[choice]
        best = "" if choice == "linear" else f" and {name} measured best ({rec.get('heldout_gain_db', rec['gain_db']):+.2f} dB)"
        return (f"self-check: on {frames} held-out kept slices MedGS measured {rec['model_gain_db']:+.2f} dB "
                f"against linear interpolation{best}, so the volume between the kept slices is {name} "
                "interpolation; --set schedule.deliver=model gives the MedGS result")
    if measured in CLASSICAL and choice != measured:
        name, ev = CLASSICAL[measured], rec.get("evidence") or {}
        over = (f"; over {ev['frames']} kept slices at twice the gap MedGS's in-between image was "
                f"{-ev['mean_db']:+.2f} dB against it, not significantly worse" if ev.get("frames") else "")
        return (f"self-check: on {frames} held-out kept slices {name} interpolation measured "
                f"{rec['psnr'][measured] - rec['psnr'][choice]:.2f} dB better than MedGS ({choice}){over}, "
                f"so MedGS is delivered; --set schedule.deliver={measured} gives {name} interpolation")
    return ""
