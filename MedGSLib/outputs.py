"""The output set of one run: it appears in OUTDIR whole, or not at all.

Every output of a run (volume, labels, probabilities/, meshes/, run.json) is written into a
staging folder beside OUTDIR (`.<name>.medgs-staging-<pid>`), and only when all of it is
written is the staging folder swapped with OUTDIR in one `renameat2(RENAME_EXCHANGE)` (Linux;
elsewhere two renames, recoverable, see `_recover`). What else OUTDIR held (files that are not
part of a MedGS output set) is carried into the staging folder by hard links first, so it
survives the swap without being copied. The previous set is then deleted.

- Without `overwrite`, any clash with an existing output name is refused before training.
- With `overwrite`, the whole previous set goes (no meshes of an earlier run left beside the
  new ones); files that are not MedGS outputs are never deleted.
- A SIGKILL at any moment leaves the old set or the new one in OUTDIR, and maybe a leftover
  staging (or, without RENAME_EXCHANGE, `.<name>.medgs-previous-<pid>`) folder whose process is
  gone; the next run on the same OUTDIR recognises it by that name and cleans or restores it.
- Free space is checked against an estimate of the outputs before anything is written.

Where the swap cannot work (OUTDIR is itself a mount point, or the file system has no hard
links) the entries are moved in one by one (`in-place` mode): each file is still whole, but a
kill in the middle can leave a mix; run.json is moved last, so a folder without a run.json
newer than its outputs is incomplete.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import MedGSError, OutputError, OutputExistsError
from .io import write_probe

log = logging.getLogger(__name__)

STAGING_TAG = "medgs-staging"
PREVIOUS_TAG = "medgs-previous"
_LEFTOVER = re.compile(rf"^\.(?P<name>.+)\.(?P<tag>{STAGING_TAG}|{PREVIOUS_TAG})-(?P<pid>\d+)$")
# Entries of OUTDIR that belong to a MedGS output set (replaced as a whole by --overwrite).
_SET_ENTRY = re.compile(r"^(run\.json|meshes|probabilities|(volume|labels)\..+)$")
# Per-file temporaries of earlier engine versions and of io.atomic_output: `<stem>.tmp-<pid><ext>`.
_FILE_TEMP = re.compile(r"^(volume|labels|run)\.tmp-(?P<pid>\d+)(\..+)?$")
# Room kept free beyond the estimate: file-system blocks, headers, run.json.
SPACE_MARGIN_BYTES = 256 * 1024


def is_set_entry(name: str) -> bool:
    return bool(_SET_ENTRY.match(name))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False   # this process is not writing that folder now: it is from an earlier call
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _os_reason(err: OSError) -> str:
    return err.strerror or str(err)


# --------------------------------------------------------------------------- atomic swap

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2). False where the call is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False     # kernel or file system without RENAME_EXCHANGE: two renames instead
    raise OSError(code, os.strerror(code), str(b))


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate `src` under `dst` with hard links (no data copied; symlinks copied as links)."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir()
        shutil.copystat(src, dst)
        for child in src.iterdir():
            _link_tree(child, dst / child.name)
    else:
        os.link(src, dst)


# --------------------------------------------------------------------------- the set


class OutputSet:
    """Stage, check and commit the outputs of one run into `dest`.

        out = OutputSet(dest, overwrite=False)
        out.prepare(["volume.nii.gz", "run.json"])   # before training: fail early
        out.check_space(estimated_bytes)
        with out.writing() as stage:                 # write every file under `stage`
            ...
        # committed here; on an exception the destination is as it was
    """

    def __init__(self, dest: str | os.PathLike, *, overwrite: bool = False):
        dest = Path(dest).expanduser().absolute()
        self.dest = dest.resolve() if dest.is_symlink() else dest   # swap the folder, not the link
        self.overwrite = overwrite
        self.stage: Path | None = None
        self._created: list[Path] = []    # parents made for a new OUTDIR, removed again on failure
        self._in_place = False

    # ------------------------------------------------------------ checks before training
    def prepare(self, names: Iterable[str] = ()) -> OutputSet:
        """Fail now, not after training: OUTDIR must be (or become) a writable folder and, without
        overwrite, hold none of `names`. Also cleans leftovers of killed runs."""
        dest = self.dest
        if dest.exists() and not dest.is_dir():
            raise OutputError(f"the output folder {dest} is an existing file; give a folder name")
        folder = dest
        while not folder.exists() and not folder.is_symlink():
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"cannot create the output folder {dest}: {folder} is a file, not a folder")
        self._recover()
        probe_in = folder if folder != dest else dest.parent
        if dest.exists() and (os.stat(dest).st_dev != os.stat(dest.parent).st_dev or _holds_cwd(dest)):
            # a mount point cannot be swapped; nor the current folder (`-o .`): the shell would be
            # left in the deleted previous folder. Stage inside it and move the entries in.
            self._in_place, probe_in = True, dest
        for where in {probe_in, folder}:
            try:
                write_probe(where)
            except OSError as err:
                raise OutputError(f"cannot write into {where}: {_os_reason(err)}") from err
        if dest.is_dir() and not self.overwrite:
            clash = sorted(n for n in names if (dest / n).exists() or (dest / n).is_symlink())
            if clash:
                raise OutputExistsError(f"{dest / clash[0]} already exists; pass --overwrite (overwrite=True) to "
                                        f"replace the previous outputs")
        return self

    def check_space(self, nbytes: int, what: str = "the outputs") -> None:
        """Refuse, with one sentence, when the staging file system has less room than `nbytes`."""
        where = self.dest if self.dest.exists() else self.dest.parent
        while not where.exists():
            where = where.parent
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            return     # no figure to compare with: the write itself will tell
        need = int(nbytes) + SPACE_MARGIN_BYTES
        if need > free:
            raise OutputError(f"not enough free space for {what} in {where}: about {_size(need)} needed, "
                              f"{_size(free)} free")

    # ------------------------------------------------------------ writing and commit
    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """Yield the staging folder; commit on success, remove it (and nothing else) on failure."""
        self._begin()
        try:
            yield self.stage
            self._commit()
        except MedGSError:      # OutputExistsError is an OSError too: keep it as it is
            self._abort()
            raise
        except OSError as err:
            self._abort()
            raise OutputError(f"cannot write the outputs to {self.dest}: {_os_reason(err)}"
                              + (f" ({Path(err.filename).name})" if getattr(err, "filename", None) else "")) from err
        except BaseException:
            self._abort()
            raise

    def _begin(self) -> None:
        dest = self.dest
        parent = dest if self._in_place else dest.parent
        missing = []
        p = parent
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            for p in reversed(missing):
                p.mkdir()
                self._created.append(p)
            self.stage = parent / f".{dest.name}.{STAGING_TAG}-{os.getpid()}"
            if self.stage.exists():
                shutil.rmtree(self.stage)
            self.stage.mkdir()
        except OSError as err:
            self._abort()
            raise OutputError(f"cannot create the output folder {dest}: {_os_reason(err)}") from err

    def _commit(self) -> None:
        stage, dest = self.stage, self.dest
        if self._in_place:
            self._commit_in_place()
            return
        if not dest.exists():
            os.rename(stage, dest)
            self._fsync_dir(dest.parent)
            return
        carried = self._carry_over()
        if not carried:
            self._in_place = True
            self._commit_in_place()
            return
        with contextlib.suppress(OSError):
            shutil.copystat(dest, stage)
        if _exchange(stage, dest):
            self._fsync_dir(dest.parent)
            shutil.rmtree(stage, ignore_errors=True)     # now the previous set
            return
        # Two renames; a kill between them leaves OUTDIR missing and the previous set under
        # the `previous` name, which `_recover` puts back on the next run.
        previous = dest.parent / f".{dest.name}.{PREVIOUS_TAG}-{os.getpid()}"
        os.rename(dest, previous)
        try:
            os.rename(stage, dest)
        except OSError:
            os.rename(previous, dest)
            raise
        self._fsync_dir(dest.parent)
        shutil.rmtree(previous, ignore_errors=True)

    def _carry_over(self) -> bool:
        """Hard-link what stays from OUTDIR into the staging folder; False if links do not work."""
        carried = []
        for entry in self.dest.iterdir():
            if _LEFTOVER.match(entry.name) or _is_dead_temp(entry.name):
                continue
            if is_set_entry(entry.name) and (self.overwrite or (self.stage / entry.name).exists()):
                continue   # replaced (a clash without overwrite was refused in prepare)
            try:
                _link_tree(entry, self.stage / entry.name)
                carried.append(self.stage / entry.name)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                    raise
                for p in carried + [self.stage / entry.name]:
                    _remove(p)      # back to the run's own outputs, moved in one by one instead
                return False
        return True

    def _commit_in_place(self) -> None:
        """Move the staged entries into OUTDIR one by one (run.json last), then drop the rest of
        the previous set. Each entry is whole; the set is not atomic (see the module doc)."""
        stage, dest = self.stage, self.dest
        dest.mkdir(exist_ok=True)
        new = sorted(stage.iterdir(), key=lambda p: p.name == "run.json")
        for entry in new:
            target = dest / entry.name
            if entry.is_dir() and target.is_dir():
                aside = dest / f".{entry.name}.{PREVIOUS_TAG}-{os.getpid()}"
                os.rename(target, aside)
                os.rename(entry, target)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(entry, target)
        if self.overwrite:
            names = {p.name for p in new}
            for entry in dest.iterdir():
                if is_set_entry(entry.name) and entry.name not in names:
                    _remove(entry)
        shutil.rmtree(stage, ignore_errors=True)

    def _abort(self) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None
        for p in reversed(self._created):
            with contextlib.suppress(OSError):
                p.rmdir()
        self._created.clear()

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        """Make the rename durable (a power cut right after must not bring back the old name)."""
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # ------------------------------------------------------------ leftovers of killed runs
    def _recover(self) -> None:
        """Clean what a killed run on this OUTDIR left: staging folders (always disposable: before
        the swap they hold an unfinished set, after it the previous one) and `previous` folders
        (put back when OUTDIR itself is missing: the kill came between the two renames)."""
        dest = self.dest
        places = [dest.parent] + ([dest] if dest.is_dir() else [])
        for place in places:
            try:
                entries = list(place.iterdir())
            except OSError:
                continue
            for entry in entries:
                m = _LEFTOVER.match(entry.name)
                if m and place == dest.parent and m.group("name") != dest.name:
                    continue    # another OUTDIR's leftovers: that run cleans its own
                if m and not _pid_alive(int(m.group("pid"))):
                    if m.group("tag") == PREVIOUS_TAG and place == dest.parent and not dest.exists():
                        log.warning("restoring %s from %s (left by a killed run)", dest, entry.name)
                        os.rename(entry, dest)
                        places.append(dest)
                        continue
                    log.info("removing %s (left by a killed run)", entry)
                    _remove(entry)
                elif place == dest and _is_dead_temp(entry.name):
                    log.info("removing %s (left by a killed run)", entry)
                    _remove(entry)


def _holds_cwd(folder: Path) -> bool:
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return False
    return cwd == folder.resolve() or folder.resolve() in cwd.parents


def _is_dead_temp(name: str) -> bool:
    m = _FILE_TEMP.match(name)
    return bool(m) and not _pid_alive(int(m.group("pid")))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"
