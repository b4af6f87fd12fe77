"""`medgs` command line: thin argparse over the API; heavy imports happen inside commands.

Every command ends through `main`'s one handler: an error the user can fix (a MedGSError, a bad
option, a file that cannot be written) is one line on stderr and exit code 2; Ctrl-C is 130 and
SIGTERM 143 (128 + the signal), each with one line; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks clean up (staged outputs)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block), like every other error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import batch as batch_cmd
    from . import eval as eval_cmd
    from . import mesh as mesh_cmd
    from . import run as run_cmd
    from . import upstream
    p = _Parser(prog="medgs", description="MedGS: fill in missing slices of CT/MRI volumes "
                "with Folded Gaussians (arXiv 2509.16806).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    run_cmd.register(sub)
    batch_cmd.register(sub)
    upstream.register(sub)
    mesh_cmd.register(sub)
    eval_cmd.register(sub)
    return p


def _on_sigterm(signum, _frame):
    raise _Terminated()


def main(argv=None) -> int:
    from ..errors import MedGSError
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    name = f"medgs {args.command}"
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass  # not the main thread (an embedding caller): its own signal handling stays
    try:
        return int(args.func(args) or 0)
    except MedGSError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        # a file the engine did not wrap (a command's own output path): still the user's to fix
        where = f"{err.filename}: " if err.filename else ""
        print(f"{name}: error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{name}: stopped by SIGTERM", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
