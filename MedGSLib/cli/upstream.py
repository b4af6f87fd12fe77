"""`medgs train` / `medgs render`: upstream MedGS's train.py and render.py command lines.

    medgs train -s ROOT -m OUT [--pipeline img|seg|joint] [--seg_source_path SEGROOT] ...
    medgs render --model_path OUT --interp K [--iteration -1] [--pipeline img|seg|both]

Every upstream flag is accepted (upstream_flags.FLAGS says where each one goes, or why it has no
effect here). ROOT holds original/0000.png ...; OUT gets chkpnt<n>.pth (at --save_iterations,
--checkpoint_iterations and the last step), xyz/<n>.pt with --save_xyz, and the renders
OUT/render_img/ and OUT/render_mask/ named {frame:05d}_{i}.png, as upstream writes them.
"""
from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

from ..errors import InputError
from . import upstream_flags as uf

_MAX_AUTO_WIDTH = 1600      # upstream's loadCam: wider frames are scaled to this width unless -r is given


def register(sub):
    t = sub.add_parser("train", help="upstream MedGS train.py: train on a PNG frame folder",
                       description="upstream MedGS's train.py on its PNG layout; every upstream flag is "
                                   "accepted, each one's help says where it goes here or why it has no effect")
    uf.add_flags(t, "train")
    own = t.add_argument_group("MedGS options (not upstream)")
    own.add_argument("--preset", choices=["paper", "fast", "quality"], default="paper",
                     help="options the upstream flags do not set: paper (default) is upstream's behaviour; "
                          "fast/quality are this project's shorter schedules")
    _add_device_options(own)
    own.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result on the CPU)")
    own.add_argument("--set", nargs="+", default=[], metavar="SECTION.NAME=VALUE", dest="overrides",
                     help="any training option, after the upstream flags, e.g. schedule.frames_per_step=8")
    t.set_defaults(func=main_train)

    r = sub.add_parser("render", help="upstream MedGS render.py: render a trained model to PNGs",
                       description="upstream MedGS's render.py; every upstream flag is accepted")
    uf.add_flags(r, "render")
    own = r.add_argument_group("MedGS options (not upstream)")
    _add_device_options(own)
    r.set_defaults(func=main_render)


def _add_device_options(g):
    g.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda or cuda:N")
    g.add_argument("--renderer", choices=["auto", "torch", "gsplat", "triton"], default="auto",
                   help="rasteriser backend (auto: gsplat on CUDA when it works, else pure torch)")


def _warn_no_effect(command: str, values: dict, given: set):
    lines = uf.without_effect(command, values, given)
    if lines:
        print(f"medgs {command}: warning: these upstream flags have no effect here:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)


# ------------------------------------------------------------------------------- frames


def upstream_size(width: int, height: int, resolution) -> tuple[int, int]:
    """(W, H) upstream's loadCam gives a frame of width x height for --resolution."""
    if resolution in (1, 2, 4, 8):
        return round(width / resolution), round(height / resolution)
    if resolution is None or resolution == -1:
        scale = width / _MAX_AUTO_WIDTH if width > _MAX_AUTO_WIDTH else 1.0
    elif resolution > 0:
        scale = width / resolution
    else:
        raise InputError(f"--resolution must be -1, 1, 2, 4, 8 or a width in pixels, got {resolution}")
    return int(width / scale), int(height / scale)


def _resize(frames, size):
    """Frames [F, H, W] in [0, 1] resized to size (W, H) with PIL's bicubic filter, as upstream's
    PILtoTorch does."""
    import numpy as np
    from PIL import Image
    W, H = size
    if (H, W) == frames.shape[1:]:
        return frames
    out = [np.asarray(Image.fromarray(f.astype(np.float32), "F").resize((W, H), Image.BICUBIC)) for f in frames]
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)


def _read(root, resolution, quiet: bool):
    from .png_frames import read_png_frames
    frames = read_png_frames(root)
    F, H, W = frames.shape
    size = upstream_size(W, H, resolution)
    if size != (W, H):
        if resolution in (None, -1) and not quiet:
            print(f"[ INFO ] frames wider than {_MAX_AUTO_WIDTH} px are scaled to {size[0]} x {size[1]}; "
                  "give --resolution 1 to keep them", file=sys.stderr)
        frames = _resize(frames, size)
    return frames, (F, H, W)


# ------------------------------------------------------------------------------- train


def _config(values: dict, given: set, args):
    from ..api import default_config
    from ..config import apply_overrides
    cfg = default_config(args.preset, args.device, seed=args.seed, renderer=args.renderer)
    uf.apply_to_config(cfg, values, given)
    if "lambda_dssim" in given:
        lam = float(values["lambda_dssim"])
        if not 0.0 <= lam < 1.0:
            raise InputError(f"--lambda_dssim must be in [0, 1), got {lam}")
        cfg.loss.dssim = cfg.loss.l1 * lam / (1.0 - lam)
    if "position_lr_max_steps" in given:
        steps = int(values["position_lr_max_steps"])
        if steps < 1:
            raise InputError(f"--position_lr_max_steps must be at least 1, got {steps}")
        iters = cfg.schedule.iterations
        if iters < 1:
            raise InputError(f"--position_lr_max_steps needs --iterations with the {cfg.preset} preset "
                             "(it sizes its number of steps from the data)")
        o = cfg.optim
        # the decay here runs log-linearly from xyz to xyz_final over `iterations`; upstream's reaches
        # position_lr_final at max_steps: the same line, ended at `iterations`
        o.xyz_final = o.xyz * (o.xyz_final / o.xyz) ** (min(iters, steps) / steps)
        if steps < iters:
            print(f"medgs train: warning: --position_lr_max_steps {steps} < --iterations {iters}: upstream holds "
                  "the xyz rate after it, here it ends there at the same rate", file=sys.stderr)
    return apply_overrides(cfg, args.overrides)


def _model_path(values: dict) -> Path:
    mp = values["model_path"]
    return Path(mp) if mp else Path("output") / uuid.uuid4().hex[:10]


def main_train(args) -> int:
    import numpy as np

    from .. import upstream_api as ua
    from .progress import ProgressBar
    values, given = uf.resolve(args, "train")
    _warn_no_effect("train", values, given)
    if not values["source_path"]:
        raise InputError("medgs train needs -s/--source_path, the folder holding original/0000.png ...")
    quiet = bool(values["quiet"])
    pipeline = values["pipeline"]
    src, source_shape = _read(values["source_path"], values["resolution"], quiet)
    frames = masks = None
    if pipeline == "img":
        frames = src
    elif pipeline == "seg":
        masks = (src > 0.5).astype(np.float32)[None]
        if values["seg_head_only"]:
            pipeline = "seg_head_only"
    else:
        if not values["seg_source_path"]:
            raise InputError("--pipeline joint needs --seg_source_path MASKROOT")
        seg, _ = _read(values["seg_source_path"], values["resolution"], quiet)
        if seg.shape != src.shape:
            raise InputError(f"image frames {src.shape} and mask frames {seg.shape} differ: same count and size needed")
        frames, masks = src, (seg > 0.5).astype(np.float32)[None]
    if values["seg_head_only"] and values["pipeline"] != "seg":
        raise InputError("--seg_head_only goes with --pipeline seg")
    if pipeline == "seg_head_only" and not values["start_checkpoint"]:
        raise InputError("--seg_head_only needs --start_checkpoint chkpntXXXX.pth")
    cfg = _config(values, given, args)
    start = ua.load_checkpoint(values["start_checkpoint"]) if values["start_checkpoint"] else None
    out = _model_path(values)
    out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(quiet)
    trainer = ua.make_trainer(frames, cfg, masks=masks, pipeline=pipeline, start=start, progress=bar)
    iters = trainer.cfg.schedule.iterations     # sized from the data where the preset leaves it at 0
    saves = {i for i in values["save_iterations"] + values["checkpoint_iterations"] if i <= iters} | {iters}
    tests = {i for i in values["test_iterations"] if i <= iters}
    # upstream saves the centres at the top of iteration n, i.e. after n - 1 steps
    xyz = ({n - 1: n for n in list(range(1, iters + 1, 5000)) + [iters]} if values["save_xyz"] else {})
    extra = {"source_shape": list(source_shape), "upstream": {k: values[k] for k in ("resolution", "pipeline")}}

    def save(tr, step):
        path = ua.save_checkpoint(ua.checkpoint(tr, **extra), out / f"chkpnt{step}.pth")
        if not quiet:
            bar.close()
            print(f"[ITER {step}] Saving Checkpoint {path}")

    def on_stop(tr, step):
        if step in xyz:
            _save_xyz(tr.model, out / "xyz" / f"{xyz[step]}.pt")
        if step in tests:
            l1, psnr = ua.evaluate(tr)
            if not quiet:
                bar.close()
                print(f"[ITER {step}] Evaluating test: L1 {l1:.6f} PSNR {psnr:.4f}")
        if step in saves and step > 0:
            save(tr, step)

    import torch
    try:
        with torch.autograd.set_detect_anomaly(bool(values["detect_anomaly"])):
            res = ua.run(trainer, stops=saves | tests | set(xyz), on_stop=on_stop)
    finally:
        bar.close()
    if trainer.step < iters:        # the preset stopped at convergence: the last model is written too
        save(trainer, trainer.step)
    psnr = res.info.get("train_psnr")
    print(f"trained {trainer.step} iterations, {res.model.n} Gaussians"
          + (f", training PSNR {psnr:.2f} dB" if psnr is not None else "")
          + f", checkpoint {out / f'chkpnt{trainer.step}.pth'}")
    return 0


def _save_xyz(model, path: Path):
    """Centres as upstream's get_xyz: [N, 3] with the plane's y = 0 (ours stores x and z only)."""
    import torch

    from .. import upstream_api as ua
    xz = model.params["xyz"].detach().cpu().float()
    ua.save_checkpoint(torch.stack([xz[:, 0], torch.zeros_like(xz[:, 0]), xz[:, 1]], 1), path)


# ------------------------------------------------------------------------------- render


def latest_checkpoint(model_path: Path, iteration: int) -> Path:
    """chkpnt<iteration>.pth, or for iteration < 0 the one with the largest number (upstream's rule)."""
    if iteration >= 0:
        p = model_path / f"chkpnt{iteration}.pth"
        if not p.is_file():
            raise InputError(f"no checkpoint {p}")
        return p
    found = [(int(m.group(1)), p) for p in model_path.glob("chkpnt*.pth")
             if (m := re.fullmatch(r"chkpnt(\d+)\.pth", p.name))]
    if not found:
        raise InputError(f"no chkpnt*.pth in {model_path}: train first (medgs train -s ROOT -m {model_path})")
    return max(found)[1]


def main_render(args) -> int:
    from .. import upstream_api as ua
    from .png_frames import write_render_pngs
    values, given = uf.resolve(args, "render")
    _warn_no_effect("render", values, given)
    if not values["model_path"]:
        raise InputError("medgs render needs -m/--model_path, the folder medgs train wrote")
    mp = Path(values["model_path"])
    if not mp.is_dir():
        raise InputError(f"--model_path {mp} is not a folder")
    quiet = bool(values["quiet"])
    ck = ua.load_checkpoint(latest_checkpoint(mp, int(values["iteration"])))
    size = None
    if values["resolution"] is not None:
        _, H0, W0 = ck.get("source_shape", ck["shape"])
        w, h = upstream_size(int(W0), int(H0), values["resolution"])
        size = (h, w)
    heads = {"img": ["image"], "seg": ["seg"], "both": ["image", "seg"]}[values["pipeline"]]
    k = int(values["interp"])
    for head in heads:
        imgs, used = ua.render_checkpoint(ck, k, head=head, size=size, device=args.device, renderer=args.renderer)
        if used != head and not quiet:
            print("no label head in this checkpoint: rendering the image head as the mask (as upstream)")
        folder = mp / ("render_img" if head == "image" else "render_mask")
        write_render_pngs(imgs, folder, k, overwrite=True, extension=values["extension"])
        if not quiet:
            print(f"wrote {len(imgs)} frames to {folder}")
    return 0
