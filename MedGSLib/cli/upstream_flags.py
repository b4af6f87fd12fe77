"""Every flag of upstream MedGS's train.py, render.py and slices_to_ply.py, and what it does here.

One table (FLAGS). Each row: the command, the names (long first), upstream's type and default,
the upstream group it is listed under (train.py's own parser, or the 3DGS ParamGroups
ModelParams = "Loading Parameters", OptimizationParams, PipelineParams), and where it goes:

- kind "config":    the value is set on the named TrainConfig options;
- kind "milestone": an absolute iteration, stored as a fraction of --iterations on the options;
- kind "command":   used by the command itself (files, outputs, resizing; see `goes`);
- kind "none":      accepted, no effect here; `goes` says why. Given with a value in `same`
                    (what happens here anyway) it is honoured silently; otherwise it is named
                    in one warning.

A flag left out keeps the preset's value (the default preset, paper, is upstream's actual
behaviour); upstream's declared default is shown in --help. Types follow upstream: "bool" is
store_true, "store_false" its inverse, "bool_value" is upstream's `type=bool` (one value; any
non-empty text is true, as in Python), "int_list" is `nargs="+"` of int. render.py builds
ModelParams with sentinel=True, so its loading flags default to None (upstream then reads
them from the model folder's cfg_args).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..errors import InputError

OWN = "options"                       # the script's own parser (argparse's default group)
LOADING = "Loading Parameters"        # ModelParams
OPTIM = "Optimization Parameters"     # OptimizationParams
PIPE = "Pipeline Parameters"          # PipelineParams


@dataclass(frozen=True)
class Flag:
    command: str
    names: tuple
    type: str
    default: object
    group: str
    kind: str
    goes: str
    same: tuple = ()
    choices: tuple = ()

    @property
    def dest(self) -> str:
        return self.names[0].lstrip("-")

    @property
    def paths(self) -> list[str]:
        """The TrainConfig options of a config or milestone flag."""
        return [p.strip() for p in self.goes.split(";")[0].split(",")]


_TEST_ITERS = [5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 100_000]
_NO_DEPTH = "depth maps feed 3DGS's depth regularisation; slices have no depth"
_NO_EXPOSURE = "3DGS's per-image exposure compensation (--train_test_exp); not in MedGS"
_OPAQUE = ("composites transparent PNG pixels on a background; medical slices are opaque and their empty "
           "space is the scan's black, which is what the model renders where it has no Gaussian")


def _loading(cmd: str, default_none: bool) -> list[Flag]:
    """ModelParams: the same flags in train.py and render.py (render.py: defaults None)."""
    def d(v):
        return None if default_none else v
    if cmd == "train":
        src = ("command", "the dataset root holding original/0000.png ... (mirror/ is read by nobody here)")
        res = ("command", "in-plane down-scale of the frames before training, upstream's rule: 1, 2, 4 or 8 "
               + "divide the size, another value > 0 is the width in pixels, -1 keeps the size unless wider "
               + "than 1600 px")
    else:
        src = ("none", "the frame count and size come from the checkpoint")
        res = ("command", "render at the size upstream's rule gives for the training frames; left out: the "
               + "size the model was trained at")
    return [
        Flag(cmd, ("--sh_degree",), "int", d(0), LOADING, "none",
             "colours are view-independent (SH degree 0, as in MedGS): every camera looks along one axis "
             "at flat Gaussians", same=(0, None)),
        Flag(cmd, ("--source_path", "-s"), "str", d(""), LOADING, src[0], src[1], same=(None,)),
        Flag(cmd, ("--model_path", "-m"), "str", d(""), LOADING, "command",
             "the model folder: chkpnt<n>.pth, render_img/, render_mask/"
             + ("; empty: ./output/<10 random hex digits>, as upstream" if cmd == "train" else "")),
        Flag(cmd, ("--images", "-i"), "str", d("images"), LOADING, "none",
             "the image folder of COLMAP scenes; MedGS's PNG readers, and this one, always read original/"),
        Flag(cmd, ("--depths", "-d"), "str", d(""), LOADING, "none", _NO_DEPTH, same=("",)),
        Flag(cmd, ("--resolution", "-r"), "int", d(-1), LOADING, res[0], res[1]),
        Flag(cmd, ("--white_background", "-w"), "bool", d(False), LOADING, "none", _OPAQUE),
        Flag(cmd, ("--train_test_exp",), "bool", d(False), LOADING, "none", _NO_EXPOSURE),
        Flag(cmd, ("--data_device",), "str", d("cuda"), LOADING, "none",
             "where upstream keeps the frames; here they sit on the training device (--device)"),
        Flag(cmd, ("--eval",), "bool", d(False), LOADING, "none",
             "upstream's PNG readers ignore it too: their test frames are the training frames; for held-out "
             "slices use medgs eval"),
    ]


def _pipeline(cmd: str) -> list[Flag]:
    return [
        Flag(cmd, ("--convert_SHs_python",), "bool", False, PIPE, "none",
             "chooses Python or CUDA for 3DGS's SH-to-colour step; colours here are SH degree 0, always in torch"),
        Flag(cmd, ("--compute_cov3D_python",), "bool", False, PIPE, "none",
             "chooses Python or CUDA for 3DGS's 3D covariances; the 2D covariances here are always built in "
             "torch (model.condition)"),
        Flag(cmd, ("--debug",), "bool", False, PIPE, "none",
             "the CUDA rasteriser's debug dumps; the renderers here have none (medgs -v logs more)"),
        Flag(cmd, ("--antialiasing",), "bool", False, PIPE, "none",
             "MedGS's renderer hard-codes antialiasing off and never reads this flag; this one renders the same way"),
    ]


_TRAIN_OWN = [
    Flag("train", ("--gs_type",), "str", "gs", OWN, "none",
         "upstream's only model type, the Folded Gaussians, which is the model here", same=("gs",)),
    Flag("train", ("--camera",), "str", "mirror", OWN, "none",
         "the mirror camera sees the flipped frame and adds no information (method.md s1.4); what it changes, "
         "the 1/F lower bound of L_sigma, is kept here; 'one' (bound 2/F) is not offered", same=("mirror",)),
    Flag("train", ("--distance",), "float", 1.0, OWN, "none",
         "the camera distance only rescales the world; the scene here sits at distance 1, where every "
         "threshold keeps its upstream value", same=(1.0,)),
    Flag("train", ("--num_pts",), "int", 100_000, OWN, "config", "model.num_points"),
    Flag("train", ("--debug_from",), "int", -1, OWN, "none",
         "turns on the CUDA rasteriser's debug mode from that iteration; the renderers here have none",
         same=(-1,)),
    Flag("train", ("--detect_anomaly",), "bool", False, OWN, "command",
         "torch.autograd anomaly detection while training (slow; finds the op that made a NaN)"),
    Flag("train", ("--test_iterations",), "int_list", _TEST_ITERS, OWN, "command",
         "after these steps: L1 and PSNR over every frame, printed as upstream's '[ITER n] Evaluating test'"),
    Flag("train", ("--save_iterations",), "int_list", [30_000], OWN, "command",
         "after these steps and the last: chkpnt<n>.pth, the model file here (upstream writes "
         "point_cloud/iteration_<n>/point_cloud.ply)"),
    Flag("train", ("--quiet",), "bool", False, OWN, "command", "no progress bar and no per-iteration messages"),
    Flag("train", ("--checkpoint_iterations",), "int_list", [], OWN, "command", "after these steps: chkpnt<n>.pth"),
    Flag("train", ("--start_checkpoint",), "str", None, OWN, "command",
         "resume this medgs checkpoint, or start the label head / joint model from it (read as data only)"),
    Flag("train", ("--save_xyz",), "bool", False, OWN, "command",
         "Gaussian centres [N, 3] (y = 0) to xyz/<n>.pt at iterations 1, 5001, 10001, ... and the last"),
    Flag("train", ("--poly_degree",), "int", 7, OWN, "config", "model.poly_degree"),
    Flag("train", ("--batch_size",), "int", 3, OWN, "none",
         "upstream parses it and never reads it: each step trains the window {k-1, k, k+1}, here too "
         "(presets without the window take --set schedule.frames_per_step=N)", same=(3,)),
    Flag("train", ("--use_dff",), "bool_value", False, OWN, "none",
         "VeGaS's learnable frame times; MedGS keeps t_k = k/F fixed, which IBFR needs, and so does this code",
         same=(False,)),
    Flag("train", ("--pipeline",), "str", "img", OWN, "command",
         "img: image head; seg: label head on masks; joint: both, shared geometry", choices=("img", "seg", "joint")),
    Flag("train", ("--seg_head_only",), "bool", False, OWN, "command",
         "with --pipeline seg and --start_checkpoint: geometry and image head frozen, only the label head learns"),
    Flag("train", ("--seg_source_path",), "str", None, OWN, "command", "mask dataset root (--pipeline joint)"),
    Flag("train", ("--lambda_img",), "float", 1.0, OWN, "config", "loss.lambda_img"),
    Flag("train", ("--lambda_seg",), "float", 1.0, OWN, "config", "loss.lambda_seg"),
]

_TRAIN_OPTIM = [
    Flag("train", ("--iterations",), "int", 30_000, OPTIM, "config",
         "schedule.iterations; milestones not given as flags scale with it"),
    Flag("train", ("--position_lr_init",), "float", 0.00016, OPTIM, "config", "optim.xyz"),
    Flag("train", ("--position_lr_final",), "float", 0.0000016, OPTIM, "config", "optim.xyz_final"),
    Flag("train", ("--position_lr_delay_mult",), "float", 0.01, OPTIM, "none",
         "MedGS's xyz schedule has no delay steps, so the multiplier never applies there either", same=(0.01,)),
    Flag("train", ("--position_lr_max_steps",), "int", 30_000, OPTIM, "command",
         "step where the log-linear xyz decay reaches position_lr_final: optim.xyz_final is set so that the "
         "decay here follows it up to --iterations (exact when max_steps >= iterations)"),
    Flag("train", ("--feature_lr",), "float", 0.0025, OPTIM, "config", "optim.color, optim.seg_color"),
    Flag("train", ("--opacity_lr",), "float", 0.025, OPTIM, "config", "optim.opacity, optim.seg_opacity"),
    Flag("train", ("--scaling_lr",), "float", 0.005, OPTIM, "config", "optim.scaling"),
    Flag("train", ("--rotation_lr",), "float", 0.001, OPTIM, "config", "optim.rotation"),
    Flag("train", ("--exposure_lr_init",), "float", 0.01, OPTIM, "none", _NO_EXPOSURE),
    Flag("train", ("--exposure_lr_final",), "float", 0.001, OPTIM, "none", _NO_EXPOSURE),
    Flag("train", ("--exposure_lr_delay_steps",), "int", 0, OPTIM, "none", _NO_EXPOSURE),
    Flag("train", ("--exposure_lr_delay_mult",), "float", 0.0, OPTIM, "none", _NO_EXPOSURE),
    Flag("train", ("--percent_dense",), "float", 0.01, OPTIM, "config", "densify.percent_dense"),
    Flag("train", ("--lambda_dssim",), "float", 0.2, OPTIM, "command",
         "loss.dssim = loss.l1 * l/(1-l), 3DGS's (1-l) L1 + l (1-SSIM) share with MedGS's L1 weight kept; "
         "upstream MedGS never reads it (its 2 L1 + 0.25 (1-SSIM) is l = 1/9, the value when left out)"),
    Flag("train", ("--densification_interval",), "int", 100, OPTIM, "milestone", "schedule.densify_every"),
    Flag("train", ("--opacity_reset_interval",), "int", 3000, OPTIM, "milestone",
         "schedule.opacity_reset_every, schedule.big_prune_from; upstream also prunes big Gaussians after it"),
    Flag("train", ("--prune_non_used_gaussians_interval",), "int", 2500, OPTIM, "none",
         "defined in upstream's arguments and read nowhere"),
    Flag("train", ("--densify_from_iter",), "int", 500, OPTIM, "milestone", "schedule.densify_from"),
    Flag("train", ("--densify_until_iter",), "int", 15_000, OPTIM, "milestone",
         "schedule.densify_until; upstream's loop ignores it and stops at 20 000, as the paper preset does "
         "when it is left out"),
    Flag("train", ("--densify_grad_threshold",), "float", 0.0002, OPTIM, "config",
         "densify.grad_threshold, densify.time_grad_threshold; upstream uses one threshold for both"),
    Flag("train", ("--depth_l1_weight_init",), "float", 1.0, OPTIM, "none", _NO_DEPTH),
    Flag("train", ("--depth_l1_weight_final",), "float", 0.01, OPTIM, "none", _NO_DEPTH),
    Flag("train", ("--random_background",), "bool", False, OPTIM, "none", _OPAQUE),
    Flag("train", ("--optimizer_type",), "str", "default", OPTIM, "none",
         "3DGS's sparse-Adam switch; MedGS and this code use Adam ('default')", same=("default",)),
]

_RENDER_OWN = [
    Flag("render", ("--iteration",), "int", -1, OWN, "command", "checkpoint chkpnt<n>.pth; -1: the latest"),
    Flag("render", ("--camera",), "str", "mirror", OWN, "none",
         "renders use the original camera in upstream too; the checkpoint holds all there is", same=("mirror",)),
    Flag("render", ("--distance",), "float", 1.0, OWN, "none",
         "the camera distance only rescales the world, fixed at 1 here", same=(1.0,)),
    Flag("render", ("--num_pts",), "int", 100_000, OWN, "none",
         "the size of the random cloud upstream builds and then replaces by the checkpoint; none is built here"),
    Flag("render", ("--skip_train",), "store_false", True, OWN, "none",
         "upstream's render.py never reads it: it renders the original frames only, as this does"),
    Flag("render", ("--skip_test",), "bool", False, OWN, "none",
         "upstream's render.py never reads it: it renders the original frames only, as this does"),
    Flag("render", ("--quiet",), "bool", False, OWN, "command", "no per-folder messages"),
    Flag("render", ("--poly_degree",), "int", 1, OWN, "none",
         "the polynomial degree comes from the checkpoint (upstream restores it too)"),
    Flag("render", ("--interp",), "int", 1, OWN, "command",
         "images per frame: frame k, sub-step i renders t = (k + i/interp)/F as {k:05d}_{i}.png"),
    Flag("render", ("--extension",), "str", ".png", OWN, "command", "file extension, which picks the format"),
    Flag("render", ("--mask_path",), "str", "-1", OWN, "none",
         "per-frame Gaussian masks (means3Dmasked/<k>.pt) written by upstream's own tools; not supported",
         same=("-1",)),
    Flag("render", ("--generate_points_path",), "str", "-1", OWN, "none",
         "upstream's point-dump option of its renderer; not supported", same=("-1",)),
    Flag("render", ("--pipeline",), "str", "img", OWN, "command",
         "img: render_img/; seg: render_mask/ (image head if the model has no label head); both",
         choices=("img", "seg", "both")),
    Flag("render", ("--chunks",), "int", 1, OWN, "none",
         "splits upstream's rendering to save GPU memory; rendering here always goes 8 frames at a time"),
]

_MESH = [
    Flag("mesh", ("--input", "-i"), "str", None, OWN, "command", "folder of case folders with render_mask/ or render/"),
    Flag("mesh", ("--output", "-o"), "str", None, OWN, "command", "output folder for <case>.ply"),
    Flag("mesh", ("--nifti", "-n"), "str", None, OWN, "command", "folder of <case>.nii.gz giving voxel spacing"),
    Flag("mesh", ("--thresh",), "float", 0.0, OWN, "command", "iso-level on the 0..255 scale; <= 0: Otsu"),
    Flag("mesh", ("--inter",), "int", 8, OWN, "command", "the --interp the frames were rendered with"),
]

FLAGS: tuple[Flag, ...] = tuple(
    _TRAIN_OWN + _loading("train", False) + _TRAIN_OPTIM + _pipeline("train")
    + _RENDER_OWN + _loading("render", True) + _pipeline("render") + _MESH
)


def flags_of(command: str) -> list[Flag]:
    return [f for f in FLAGS if f.command == command]


# ------------------------------------------------------------------------------- argparse


def _upstream_bool(text: str) -> bool:
    """Upstream's `type=bool`: Python's bool() of the text, so any non-empty text is true."""
    return bool(text)


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the command's upstream flags, grouped as upstream's --help groups them.

    Defaults are SUPPRESS so that `resolve` knows which flags were given; the help names
    upstream's default and where the flag goes here.
    """
    groups = {OWN: parser}
    for f in flags_of(command):
        if f.group not in groups:
            groups[f.group] = parser.add_argument_group(f.group)
        where = f"no effect here: {f.goes}" if f.kind == "none" else f"here: {f.goes}"
        kw = {"default": argparse.SUPPRESS, "help": f"(upstream default {f.default!r}) {where}"}
        if f.type == "bool":
            kw["action"] = "store_true"
        elif f.type == "store_false":
            kw["action"] = "store_false"
        elif f.type == "bool_value":
            kw["type"] = _upstream_bool
        elif f.type == "int_list":
            kw.update(type=int, nargs="+")
        else:
            kw["type"] = {"int": int, "float": float, "str": str}[f.type]
        if f.choices:
            kw["choices"] = list(f.choices)
        groups[f.group].add_argument(*f.names, dest=f.dest, **kw)


def resolve(args: argparse.Namespace, command: str) -> tuple[dict, set]:
    """(value of every upstream flag, given or upstream's default; the set of those given)."""
    values, given = {}, set()
    for f in flags_of(command):
        if hasattr(args, f.dest):
            values[f.dest] = getattr(args, f.dest)
            given.add(f.dest)
        else:
            values[f.dest] = list(f.default) if isinstance(f.default, list) else f.default
    return values, given


def without_effect(command: str, values: dict, given: set) -> list[str]:
    """'--flag VALUE: why' for each given flag that has no effect here (a value in `same` has)."""
    out = []
    for f in flags_of(command):
        if f.kind == "none" and f.dest in given and values[f.dest] not in f.same:
            out.append(f"{f.names[0]} {values[f.dest]!r}: {f.goes}")
    return out


def apply_to_config(cfg, values: dict, given: set):
    """Set the given config and milestone flags on a TrainConfig (milestones after --iterations)."""
    flags = flags_of("train")
    for f in flags:
        if f.kind == "config" and f.dest in given:
            for path in f.paths:
                section, name = path.split(".")
                old = getattr(getattr(cfg, section), name)
                setattr(getattr(cfg, section), name, type(old)(values[f.dest]))
    iters = cfg.schedule.iterations
    milestones = [f for f in flags if f.kind == "milestone" and f.dest in given]
    if "iterations" in given and iters < 1:
        raise InputError(f"--iterations must be at least 1, got {iters}")
    if milestones and iters < 1:    # the fast and quality presets size their steps from the data
        raise InputError(f"{milestones[0].names[0]} needs --iterations with the {cfg.preset} preset "
                         "(it sizes its number of steps from the data)")
    for f in milestones:
        v = int(values[f.dest])
        low = 0 if f.dest in ("densify_from_iter", "densify_until_iter") else 1
        if v < low:
            raise InputError(f"{f.names[0]} must be at least {low}, got {v}")
        for path in f.paths:
            section, name = path.split(".")
            setattr(getattr(cfg, section), name, v / iters)
    return cfg
