"""`medgs run`: a volume (and label map) in, a dense volume, label map and meshes out."""
from __future__ import annotations

import argparse


def add_training_options(p: argparse.ArgumentParser):
    p.add_argument("--preset", choices=["fast", "quality", "paper"], default="fast",
                   help="fast: pixel initialisation, motion-compensated in-between targets, few iterations, "
                        "early stop (default); quality: 3000 iterations, 16 frames per step (~2x the time); "
                        "paper: the published 30k-iteration settings")
    p.add_argument("--iterations", type=int, help="training iterations; every schedule milestone scales with it")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N or mps (Apple GPU)")
    p.add_argument("--renderer", choices=["auto", "torch", "gsplat", "triton"], default="auto",
                   help="rasteriser backend (auto: gsplat on CUDA when it works, else pure torch)")
    p.add_argument("--max-gaussians", type=int, help="cap on the number of Gaussians (memory knob)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result on the CPU)")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE", dest="overrides",
                   help="any training option over the preset, e.g. loss.ibfr_target=linear schedule.iterations=500")


def register(sub):
    p = sub.add_parser("run", help="interpolate a volume file (NIfTI, NRRD, MHA) to a denser grid",
                       description="Train Folded Gaussians on the slices of INPUT and write OUTDIR/volume.<ext> "
                                   "(same extension as INPUT), labels.<ext>, meshes/ and run.json.")
    p.add_argument("input", nargs="?", help="intensity volume (.nii, .nii.gz, .nrrd, .nhdr, .mha)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--labels", help="label map on the same grid (one model head per label)")
    p.add_argument("--labels-only", action="store_true", help="interpolate the label map without an intensity "
                   "volume (INPUT may then be omitted)")
    add_run_options(p)
    p.set_defaults(func=main_run)


def add_run_options(p: argparse.ArgumentParser):
    """Every `medgs run` option but the input, label map and output folder (`medgs batch` takes
    them too, for every case, and per case from its manifest)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--factor", type=float, help="up-sampling factor along the slice axis (2, 3, 2.5 ...)")
    g.add_argument("--spacing", type=float, help="target slice spacing in mm")
    p.add_argument("--axis", default="auto", help="slice axis: auto (largest spacing), 0/1/2 or i/j/k")
    p.add_argument("--keep-every", type=int, default=1,
                   help="experiments: keep only every K-th slice first, then restore the full grid")
    p.add_argument("--annotated-slices", help="label map annotated on some slices only: 'auto' or a list "
                   "such as 0,5,10-40:5 (slice indices along the axis)")
    p.add_argument("--color-table", help="label names/colours (Slicer or FreeSurfer colour table)")
    p.add_argument("--mesh-format", choices=["vtk", "ply", "stl", "obj"], default="vtk")
    p.add_argument("--no-meshes", action="store_true", help="do not extract surface meshes")
    p.add_argument("--probabilities", action="store_true", help="also write per-label probability volumes")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in OUTDIR, "
                   "all of them (files that are not MedGS outputs stay)")
    p.add_argument("--max-output-gb", type=float, default=None,
                   help="refuse runs whose outputs (uncompressed) would exceed this size (default 4)")
    p.add_argument("--resume", action="store_true", help="continue a killed or failed run of the same command "
                   "from its last checkpoint (.OUTDIR.medgs-checkpoint.pth beside OUTDIR)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="save the training state every N iterations (default: by time only)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, metavar="M",
                   help="save the training state every M minutes (default 5; 0: off)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_training_options(p)


def main_run(args) -> int:
    from .progress import ProgressBar
    bar = ProgressBar(args.quiet)
    try:
        res = run_from_args(args, progress=bar)
    finally:
        bar.close()
    if not args.quiet:
        info = res.info
        print(f"wrote {args.output}: {info['iterations_run']} iterations, {info['gaussians']} Gaussians, "
              f"{info['timings_s']['total']:.1f} s on {info['device']} ({info['renderer']})")
        check = info.get("self_check")
        if check:
            from ..selfcheck import summary
            labels = f", labels {check['label_choice']}" if "label_choice" in check else ""
            print(f"  {summary(check)}; delivered: {check['choice']}{labels}")
        for k, v in res.files.items():
            if isinstance(v, str):
                print(f"  {k}: {v}")
            elif k == "meshes":
                print(f"  meshes: {len(v)} in {args.output}/meshes")
    return 0


def run_from_args(args, progress=None, cancel=None):
    """`medgs run` from its parsed options: checks, `resolve_config`, `api.run_to_files` -> RunResult.

    The one path from run options to an output folder; `medgs batch` runs each case through it."""
    from ..api import run_to_files
    from ..config import resolve_config
    from ..errors import InputError
    if args.labels_only:
        if not args.labels:
            raise InputError("--labels-only needs --labels LABELMAP")
        image = None
    else:
        if not args.input:
            raise InputError("give an INPUT volume (or --labels LABELMAP --labels-only)")
        image = args.input
    _check_numbers(args)
    if args.factor is None and args.spacing is None and args.keep_every <= 1:
        raise InputError("give --factor K or --spacing MM (or --keep-every K to restore a thinned grid)")
    ann = args.annotated_slices
    if ann and ann != "auto":
        from ..labels import parse_slice_list
        ann = parse_slice_list(ann)
    cfg = resolve_config(args.preset, args.device, args.overrides, seed=args.seed, iterations=args.iterations,
                         max_gaussians=args.max_gaussians, renderer=args.renderer)
    from ..api import DEFAULT_MAX_OUTPUT_GB
    outputs = ("volume", "labels") + (() if args.no_meshes else ("meshes",))
    return run_to_files(image, args.output, labels_path=args.labels, factor=args.factor, spacing=args.spacing,
                        axis=args.axis, keep_every=args.keep_every, config=cfg, preset=args.preset,
                        device=args.device, seed=args.seed, iterations=args.iterations, outputs=outputs,
                        mesh_format=args.mesh_format, annotated_slices=ann, color_table=args.color_table,
                        probabilities=args.probabilities, overwrite=args.overwrite,
                        max_output_gb=args.max_output_gb or DEFAULT_MAX_OUTPUT_GB, resume=args.resume,
                        checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
                        options_record={k: v for k, v in vars(args).items() if k != "func"},
                        progress=progress, cancel=cancel)


def _check_numbers(args) -> None:
    """Options that argparse types accept but that make no run: one line naming the option.

    The bounds that depend on the data (how large the output grid gets) are checked by
    run_to_files once the input's size is known.
    """
    import math

    from ..errors import InputError

    def positive(name, value, kind=float):
        if value is None:
            return
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"{name} must be a positive {'whole number' if kind is int else 'number'}, got {value:g}")

    positive("--factor", args.factor)
    positive("--spacing", args.spacing)
    positive("--iterations", args.iterations, int)
    positive("--max-gaussians", args.max_gaussians, int)
    positive("--keep-every", args.keep_every, int)
    positive("--max-output-gb", args.max_output_gb)
    if args.checkpoint_every < 0:
        raise InputError(f"--checkpoint-every must be 0 or a positive number of iterations, got {args.checkpoint_every}")
    if not math.isfinite(args.checkpoint_minutes) or args.checkpoint_minutes < 0:
        raise InputError(f"--checkpoint-minutes must be 0 or positive, got {args.checkpoint_minutes:g}")
