"""One case of a batch: its `medgs run` command line, and running it in this process.

A case *is* a `medgs run` argument list ([image, -o, OUTDIR/name, --labels ..., run options]):
it is parsed by the `medgs run` parser and run by `cli.run.run_from_args`, the code path of
`medgs run` itself (same config through `resolve_config`, same writer `api.run_to_files`), so a
case folder is the folder `medgs run` would write, and its run.json records the same options.
Jobs cross process boundaries (worker processes, Ray) as plain dicts {"name", "argv"}.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

from ..errors import CancelledError, InputError
from .status import DONE, FAILED, INTERRUPTED, now_iso, one_line, self_check_fields


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises InputError (a case's bad option fails that case, not the batch)."""

    def error(self, message: str):
        raise InputError(f"{message}")


def run_parser() -> argparse.ArgumentParser:
    """The `medgs run` sub-command parser, raising InputError on a bad option."""
    from ..cli import run as run_cmd
    root = _RaisingParser(prog="medgs")
    root.add_argument("-v", "--verbose", action="store_true")    # as `medgs`: run.json's options match
    sub = root.add_subparsers(dest="command", parser_class=_RaisingParser)
    run_cmd.register(sub)
    return root


def options_parser() -> argparse.ArgumentParser:
    """Only the run options a batch and a manifest row may give (no input, labels or -o)."""
    from ..cli.run import add_run_options
    p = _RaisingParser(prog="medgs batch", add_help=False)
    add_run_options(p)
    return p


def option_tokens(values: argparse.Namespace) -> list[str]:
    """The command-line tokens of the run options in `values` that differ from their defaults."""
    tokens: list[str] = []
    for action in options_parser()._actions:
        if not action.option_strings or not hasattr(values, action.dest):
            continue
        v = getattr(values, action.dest)
        if v == action.default:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            tokens.append(flag)
        elif isinstance(v, (list, tuple)):
            tokens += [flag, *map(str, v)]
        else:
            tokens += [flag, str(v)]
    return tokens


def _split_sets(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(tokens without `--set ...`, the --set items) so that a case's --set adds to the batch's."""
    rest, sets, in_set = [], [], False
    for t in tokens:
        if t == "--set":
            in_set = True
        elif in_set and not t.startswith("--"):
            sets.append(t)
        else:
            in_set = False
            rest.append(t)
    return rest, sets


def case_argv(image: str | None, labels: str | None, out_dir: str, batch_tokens: list[str],
              case_tokens: list[str]) -> list[str]:
    """The `medgs run` arguments of a case: the case's options after the batch's (later wins),
    --set items of both in one list (the case's last)."""
    base, base_sets = _split_sets(list(batch_tokens))
    own, own_sets = _split_sets(list(case_tokens))
    argv = ([image] if image else []) + ["-o", str(out_dir)] + (["--labels", labels] if labels else [])
    argv += base + own
    if base_sets or own_sets:
        argv += ["--set", *base_sets, *own_sets]
    return argv


def parse_case(argv: list[str]) -> argparse.Namespace:
    """`medgs run ARGV` parsed (InputError on a bad option)."""
    return run_parser().parse_args(["run", *argv])


def planned_options(ns: argparse.Namespace) -> dict:
    """What run.json's "options" will hold for this case (as `medgs run` records it)."""
    return {k: v for k, v in vars(ns).items() if k != "func"}


def command_line(argv: list[str]) -> str:
    return shlex.join(["medgs", "run", *[str(a) for a in argv]])


def run_case(job: dict, cancel=None, progress=None) -> dict:
    """Run one job {"name", "argv"} here; the outcome as CaseRecord fields. Never raises for a
    failing case (the next one must run); KeyboardInterrupt goes up to the executor."""
    from ..cli.run import run_from_args
    _reset_peak_memory()
    t0 = time.perf_counter()
    out = {"started": now_iso()}
    try:
        args = parse_case(job["argv"])
        res = run_from_args(args, progress=progress, cancel=cancel)
        out.update(status=DONE, **self_check_fields(res.info))
    except CancelledError as err:
        out.update(status=INTERRUPTED, reason=one_line(err))
    except Exception as err:  # noqa: BLE001 - a bad or crashing case is recorded, the rest go on
        out.update(status=FAILED, reason=one_line(err))
    finally:
        out.update(seconds=round(time.perf_counter() - t0, 3), finished=now_iso())
        _release_memory()
    return out


def _cuda():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch
    return None


def _reset_peak_memory() -> None:
    """run.json's peak_gpu_memory_gb is this case's, as in a fresh `medgs run` process."""
    torch = _cuda()
    if torch is not None:
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def _release_memory() -> None:
    """Give back what a case held, so that a failed case (an out-of-memory one) does not starve
    the next one in this long-lived process."""
    import gc
    gc.collect()
    torch = _cuda()
    if torch is not None:
        torch.cuda.empty_cache()
