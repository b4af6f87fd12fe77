"""`medgs` command line: thin argparse over the API; heavy imports happen inside commands."""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import eval as eval_cmd
    from . import mesh as mesh_cmd
    from . import run as run_cmd
    from . import upstream
    p = argparse.ArgumentParser(prog="medgs", description="MedGS: fill in missing slices of CT/MRI volumes "
                                "with Folded Gaussians (arXiv 2509.16806).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    run_cmd.register(sub)
    upstream.register(sub)
    mesh_cmd.register(sub)
    eval_cmd.register(sub)
    return p


def main(argv=None) -> int:
    from ..errors import MedGSError
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MedGSError as err:
        print(f"medgs {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medgs {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
