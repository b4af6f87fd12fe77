"""`medgs batch INPUTS -o OUTDIR [run options]`: interpolate a cohort, one `medgs run` folder per case.

Exit codes: 0 every case done or skipped; 1 the batch ran but some case failed (batch.json says
which and why); 2 a bad batch (no volumes, bad manifest, bad option); 130 Ctrl-C, 143 SIGTERM
(finished cases stay, batch.json records the interrupted ones).
"""
from __future__ import annotations

import shlex
import sys

EXIT_CASES_FAILED = 1


def register(sub):
    from ..batch.manifest import DEFAULT_LABEL_RULE
    from ..batch.runner import EXECUTORS
    from .run import add_run_options
    p = sub.add_parser("batch", help="interpolate a cohort of volumes (a folder or a CSV manifest), resumable",
                       description="Run `medgs run` on every case of INPUTS into OUTDIR/<case>/ (the folder "
                                   "`medgs run` writes), in one long-lived process per GPU, and record each "
                                   "case in OUTDIR/batch.json and batch.csv. Complete cases are skipped on a "
                                   "rerun; a failing case is recorded and the others go on.")
    p.add_argument("inputs", metavar="INPUTS", help="a folder of volumes, or a CSV manifest with columns image, "
                   "labels, name, options (options: `medgs run` options for that case)")
    p.add_argument("-o", "--output", required=True, help="batch folder: one subfolder per case, batch.json, batch.csv")
    p.add_argument("--label-rule", default=DEFAULT_LABEL_RULE, metavar="IMAGE_SUFFIX=LABEL_SUFFIX",
                   help="folder INPUTS: how a label map is named after its image (default %(default)s: "
                        "ct_image.nii.gz + ct_labels.nii.gz = case ct; =_seg: ct.nrrd + ct_seg.nrrd)")
    p.add_argument("--no-labels", action="store_true", help="folder INPUTS: every volume is an image, no label maps")
    p.add_argument("--executor", choices=EXECUTORS, default="auto",
                   help="auto: one process per GPU when several are visible, else in this process; local: in "
                        "this process; gpus: one worker process per visible GPU (CUDA_VISIBLE_DEVICES); "
                        "ray: one Ray task per case (pip install 'medgs[batch]')")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    add_run_options(p)
    p.set_defaults(func=main_batch)


def main_batch(args) -> int:
    from ..batch.case import option_tokens
    from ..batch.manifest import load_cases
    from ..batch.runner import run_batch
    from ..errors import InputError
    from .run import _check_numbers
    _check_numbers(args)        # a bad number would fail every case: say it once, now
    cases = load_cases(args.inputs, None if args.no_labels else args.label_rule)
    per_case = " ".join(" ".join(c.options) for c in cases)
    if args.factor is None and args.spacing is None and args.keep_every <= 1 and not any(
            f in per_case for f in ("--factor", "--spacing", "--keep-every")):
        raise InputError("give --factor K or --spacing MM (or --keep-every K), here or per case in the manifest")
    if args.executor == "ray":
        from ..batch.ray_executor import import_ray
        import_ray()            # the clear message now, not after planning
    tokens = option_tokens(args)
    command = shlex.join(["medgs", "batch", args.inputs, "-o", args.output, *tokens])
    report = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    doc = run_batch(cases, args.output, tokens, executor=args.executor, report=report, command=command,
                    inputs=args.inputs, ray_address=args.ray_address, device=args.device)
    s = doc["summary"]
    rate = f", {s['cases_per_minute']:.2f} cases/min" if s["cases_per_minute"] else ""
    print(f"{args.output}: {s['done']} done, {s['skipped']} skipped, {s['failed']} failed of {s['cases']} "
          f"in {s['wall_s']:.1f} s{rate} (batch.json, batch.csv)")
    for c in doc["cases"]:
        if c["status"] == "failed":
            print(f"  failed {c['name']}: {c['reason']}")
    return EXIT_CASES_FAILED if s["failed"] else 0
