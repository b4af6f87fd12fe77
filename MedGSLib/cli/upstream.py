"""`medgs train` / `medgs render`: the upstream MedGS scripts' flags on the PNG frame layout.

    medgs train -s ROOT -m OUT [--pipeline img|seg|joint] [--seg_source_path SEGROOT] ...
    medgs render --model_path OUT --interp K [--iteration -1] [--pipeline img|seg|both]

ROOT holds original/0000.png ... (mirror/ is accepted and ignored: it adds no information,
method.md s1.4). Checkpoints are OUT/chkpnt<iteration>.pth; renders go to OUT/render_img/ and
OUT/render_mask/ named {frame:05d}_{i}.png as upstream writes them.
"""
from __future__ import annotations

import re
from pathlib import Path


def register(sub):
    t = sub.add_parser("train", help="upstream-compatible training on a PNG frame folder")
    t.add_argument("-s", "--source_path", required=True, help="dataset root with original/0000.png ...")
    t.add_argument("-m", "--model_path", required=True, help="output folder for checkpoints")
    t.add_argument("--pipeline", choices=["img", "seg", "joint"], default="img")
    t.add_argument("--seg_source_path", help="mask dataset root (joint pipeline)")
    t.add_argument("--seg_head_only", action="store_true", help="with --pipeline seg: train only the label head")
    t.add_argument("--start_checkpoint", help="checkpoint to resume or to start the label head from")
    t.add_argument("--lambda_img", type=float, default=1.0)
    t.add_argument("--lambda_seg", type=float, default=1.0)
    t.add_argument("--poly_degree", type=int, default=None, help="polynomial degree (default 7)")
    t.add_argument("--num_pts", type=int, default=None, help="initial Gaussians (paper: 100000)")
    t.add_argument("--batch_size", type=int, default=3, help="accepted for compatibility (unused upstream too)")
    t.add_argument("--iterations", type=int, default=None)
    t.add_argument("--checkpoint_iterations", type=int, nargs="*", default=[])
    t.add_argument("--save_iterations", type=int, nargs="*", default=[])
    t.add_argument("--test_iterations", type=int, nargs="*", default=[])
    t.add_argument("--random_background", action="store_true", help="accepted; MedGS data has a black background")
    t.add_argument("--save_xyz", action="store_true", help="accepted for compatibility (no effect)")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--preset", choices=["paper", "fast", "quality"], default="paper",
                   help="paper (default here, as upstream) or fast")
    t.add_argument("--device", default="auto")
    t.add_argument("--renderer", choices=["auto", "torch", "gsplat", "triton"], default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=main_train)

    r = sub.add_parser("render", help="upstream-compatible rendering of a trained model to PNGs")
    r.add_argument("-m", "--model_path", required=True)
    r.add_argument("--iteration", type=int, default=-1, help="checkpoint iteration; -1 = latest")
    r.add_argument("--interp", type=int, default=1, help="frames rendered per input frame")
    r.add_argument("--pipeline", choices=["img", "seg", "both"], default="img")
    r.add_argument("--chunks", type=int, default=1, help="accepted: rendering is always chunked")
    r.add_argument("--extension", default=".png")
    r.add_argument("--poly_degree", type=int, default=None, help="ignored: restored from the checkpoint")
    r.add_argument("--device", default="auto")
    r.add_argument("--overwrite", action="store_true", default=True)
    r.set_defaults(func=main_render)


def _latest_checkpoint(model_path: Path, iteration: int) -> Path:
    from ..errors import InputError
    if iteration >= 0:
        p = model_path / f"chkpnt{iteration}.pth"
        if not p.exists():
            raise InputError(f"no checkpoint {p}")
        return p
    found = sorted(model_path.glob("chkpnt*.pth"), key=lambda q: int(re.sub(r"\D", "", q.stem) or 0))
    if not found:
        raise InputError(f"no chkpnt*.pth in {model_path}: train first (medgs train -s ROOT -m {model_path})")
    return found[-1]


def main_train(args) -> int:
    import numpy as np
    import torch
    from ..api import default_config
    from ..errors import InputError
    from ..frames import read_png_frames
    from ..train import Trainer
    from .progress import ProgressBar
    out = Path(args.model_path)
    src = read_png_frames(args.source_path)
    frames = masks = None
    pipeline = args.pipeline
    if pipeline == "img":
        frames = src
    elif pipeline == "seg":
        masks = (src > 0.5).astype(np.float32)[None]
        if args.seg_head_only:
            pipeline = "seg_head_only"
            if not args.start_checkpoint:
                raise InputError("--seg_head_only needs --start_checkpoint chkpntXXXX.pth")
    else:
        if not args.seg_source_path:
            raise InputError("--pipeline joint needs --seg_source_path MASKROOT")
        seg = read_png_frames(args.seg_source_path)
        if seg.shape != src.shape:
            raise InputError(f"image frames {src.shape} and mask frames {seg.shape} differ: same count and size needed")
        frames, masks = src, (seg > 0.5).astype(np.float32)[None]
    cfg = default_config(args.preset, args.device, seed=args.seed, iterations=args.iterations,
                         poly_degree=args.poly_degree, renderer=args.renderer)
    if args.num_pts:
        cfg.model.num_points = args.num_pts
    cfg.loss.lambda_img, cfg.loss.lambda_seg = args.lambda_img, args.lambda_seg
    bar = ProgressBar(args.quiet)
    trainer = Trainer(torch.from_numpy(frames) if frames is not None else None, cfg,
                      masks=torch.from_numpy(masks) if masks is not None else None, pipeline=pipeline, progress=bar)
    if args.start_checkpoint:
        ck = torch.load(args.start_checkpoint, map_location="cpu", weights_only=False)
        trainer.load_checkpoint(ck, resume_optimizer=True)
        if pipeline == "seg_head_only":
            trainer.model.add_seg_head(1, init=trainer.model.params["color"].detach().clone())
            trainer._build_optimizer()
            trainer.step = 0
    out.mkdir(parents=True, exist_ok=True)
    saves = set(args.checkpoint_iterations) | set(args.save_iterations)
    try:
        res = trainer.train()
    finally:
        bar.close()
    ck = trainer.checkpoint()
    ck["n_frames"] = int(trainer.F)
    _save(ck, out / f"chkpnt{trainer.step}.pth")
    if saves - {trainer.step}:
        print(f"note: intermediate checkpoints {sorted(saves - {trainer.step})} are not written; "
              f"the final one is chkpnt{trainer.step}.pth")
    print(f"trained {trainer.step} iterations, {res.model.n} Gaussians, training PSNR "
          f"{res.info['train_psnr']}, checkpoint {out / f'chkpnt{trainer.step}.pth'}")
    return 0


def _save(obj, path: Path):
    import os
    import torch
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main_render(args) -> int:
    import numpy as np
    import torch
    from ..frames import write_render_pngs
    from ..interpolate import render_positions
    from ..model import FoldedGaussians
    from ..render.base import resolve_device, select_renderer
    mp = Path(args.model_path)
    ckp = _latest_checkpoint(mp, args.iteration)
    ck = torch.load(ckp, map_location="cpu", weights_only=False)
    dev = resolve_device(args.device)
    model = FoldedGaussians.from_state_dict(ck["model"], dev)
    renderer, _ = select_renderer(dev, "auto")
    F, H, W = ck["shape"]
    k = max(1, int(args.interp))
    # upstream renders t = (frame + i / K) / F for every frame, the last one's i > 0 included
    positions = np.arange(F * k, dtype=np.float64) / k
    heads = {"img": ["image"], "seg": ["seg"], "both": ["image", "seg"]}[args.pipeline]
    for head in heads:
        if head == "seg" and not model.has_seg:
            print("no label head in this checkpoint: rendering the image head as the mask (as upstream)")
            head_used = "image"
        else:
            head_used = head
        imgs = render_positions(model, positions, F, H, W, renderer, head_used)
        if imgs.ndim == 4:
            imgs = imgs[..., 0]
        folder = mp / ("render_img" if head == "image" else "render_mask")
        write_render_pngs(np.clip(imgs, 0, 1), folder, k, overwrite=True)
        print(f"wrote {len(imgs)} frames to {folder}")
    return 0
