"""Start the worker process, read its JSON lines without blocking, stop its whole tree.

A *runner* is any callable `runner(args, env, cwd) -> Popen-like` (an object with `pid`,
`stdout` (text lines), `poll()`, `wait()` and `kill()`). Inside Slicer the default runner is
`slicer.util.launchConsoleProcess` (clean startup environment for PythonSlicer); outside it
is `subprocess.Popen`. Tests inject their own runner to fake crashes and hangs.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from .paths import engine_root

log = logging.getLogger(__name__)

Runner = Callable[[list, dict, str], "subprocess.Popen"]

# How long a cancelled worker gets to exit after SIGTERM before its tree is killed outright.
TERMINATE_GRACE_S = 3.0


def python_executable() -> str:
    """PythonSlicer inside Slicer (its launcher sets up Slicer's Python), else this interpreter."""
    try:
        import slicer

        if hasattr(slicer, "app"):
            found = shutil.which("PythonSlicer")
            if found:
                return found
    except ImportError:
        pass
    return sys.executable


def worker_command(job_dir: Path, python: str | None = None) -> list[str]:
    return [python or python_executable(), "-m", "MedGSLib.worker", str(job_dir)]


def worker_environment() -> dict[str, str]:
    """Variables to add for the worker: unbuffered output, and the engine on PYTHONPATH."""
    root = str(engine_root())
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONUNBUFFERED": "1", "PYTHONPATH": root + (os.pathsep + path if path else "")}


def subprocess_runner(args: list, env: dict, cwd: str):
    """Plain Popen: stdout as text lines, stderr merged (early crashes still reach the log)."""
    full_env = dict(os.environ)
    full_env.update(env)
    kwargs = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, encoding="utf-8", errors="replace", bufsize=1, cwd=cwd, env=full_env, **kwargs)


def slicer_runner(args: list, env: dict, cwd: str):
    """Inside Slicer: the startup environment (not Slicer's own), plus our variables."""
    import slicer

    return slicer.util.launchConsoleProcess(args, useStartupEnvironment=True, updateEnvironment=env, cwd=cwd)


def default_runner() -> Runner:
    try:
        import slicer

        if hasattr(slicer, "app"):
            return slicer_runner
    except ImportError:
        pass
    return subprocess_runner


def parse_line(line: str) -> dict:
    """One stdout line -> event dict; anything that is not a protocol object becomes a log event."""
    text = line.rstrip("\r\n")
    if text.startswith("{"):
        try:
            event = json.loads(text)
            if isinstance(event, dict) and isinstance(event.get("event"), str):
                return event
        except json.JSONDecodeError:
            pass
    return {"event": "log", "level": "output", "message": text}


class WorkerProcess:
    """A started worker: a reader thread moves its stdout lines into a queue.

    `events()` drains the queue without blocking (call it from a GUI timer). `finished` is
    True once stdout closed and the exit code is known.
    """

    def __init__(self, popen):
        self.popen = popen
        self.pid = popen.pid
        self._queue: queue.Queue = queue.Queue()
        self._returncode: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"medgs-worker-{self.pid}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            stream = self.popen.stdout
            if stream is not None:
                for line in iter(stream.readline, ""):
                    if line.strip():
                        self._queue.put(parse_line(line))
        except (OSError, ValueError) as err:  # pipe closed under us by a kill
            self._queue.put({"event": "log", "level": "debug", "message": f"worker output closed: {err}"})
        finally:
            self._returncode = self.popen.wait()
            self._done.set()

    def events(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    @property
    def finished(self) -> bool:
        return self._done.is_set() and self._queue.empty()

    @property
    def returncode(self) -> int | None:
        return self._returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def terminate_tree(self, grace_s: float = TERMINATE_GRACE_S) -> None:
        """SIGTERM every process of the tree (the worker reports "cancelled"), wait, kill what is left.

        PythonSlicer is a launcher that starts python-real: stopping only the process we
        started would leave the real worker running, hence the whole tree.
        """
        procs = self.signal_tree(kill=False)
        if procs is None:
            return
        import psutil

        _gone, alive = psutil.wait_procs(procs, timeout=grace_s)
        if alive:
            self.signal_tree(kill=True, procs=alive)
            psutil.wait_procs(alive, timeout=grace_s)

    def signal_tree(self, kill: bool, procs: list | None = None) -> list | None:
        """Send SIGTERM (or SIGKILL) to the tree without waiting; returns the processes signalled.

        Keep the returned list to kill them later: once the launcher is gone its children are
        re-parented and can no longer be found from it.
        """
        try:
            import psutil
        except ImportError:
            log.warning("psutil is not installed: stopping only the launcher process %s", self.pid)
            self._kill_popen()
            return None
        if procs is None:
            try:
                root = psutil.Process(self.pid)
                procs = root.children(recursive=True) + [root]
            except psutil.NoSuchProcess:
                return []
        for p in procs:
            try:
                p.kill() if kill else p.terminate()
            except psutil.NoSuchProcess:
                pass
        return procs

    def _kill_popen(self) -> None:
        try:
            self.popen.kill()
        except OSError:
            pass


def start_worker(job_dir: Path, runner: Runner | None = None, python: str | None = None) -> WorkerProcess:
    runner = runner or default_runner()
    popen = runner(worker_command(job_dir, python), worker_environment(), str(engine_root()))
    return WorkerProcess(popen)
