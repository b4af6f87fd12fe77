"""The cases of a cohort: from a folder of volumes (label maps matched by a naming rule) or a CSV manifest.

Folder: every volume file (io.SUPPORTED_EXTENSIONS) is a case, sorted by name. With the rule
"_image=_labels" (the default), `ct_image.nii.gz` is case `ct` and its label map is the volume
file named `ct_labels.*`; a file without the image suffix (`ct.nii.gz`) looks for `ct_labels.*`.
Files whose stem ends with the label suffix are label maps, never cases of their own.

CSV manifest (UTF-8, header row): `image` (required column), `labels`, `name`, `options`
(`medgs run` options for that case, written as on the command line: "--factor 3 --set
schedule.iterations=500"). Relative paths are relative to the CSV file's folder. A row with
an empty image and a label map is a labels-only case.
"""
from __future__ import annotations

import csv
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

DEFAULT_LABEL_RULE = "_image=_labels"
MANIFEST_COLUMNS = ("image", "labels", "name", "options")
# a case name is a folder name under OUTDIR: no separators, no leading dot (hidden, and the
# output set's staging folders are dot-names)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]*$")


@dataclass
class Case:
    name: str
    image: str | None
    labels: str | None = None
    options: list = field(default_factory=list)     # `medgs run` option tokens for this case only


def parse_label_rule(rule: str) -> tuple[str, str]:
    """"_image=_labels" -> ("_image", "_labels"); the image suffix may be empty ("=_seg")."""
    image_sfx, sep, label_sfx = str(rule).partition("=")
    if not sep or not label_sfx or "/" in rule:
        raise InputError(f"bad --label-rule {rule!r}: write IMAGE_SUFFIX=LABEL_SUFFIX, e.g. _image=_labels or =_seg")
    return image_sfx, label_sfx


def _volume_files(folder: Path) -> dict[str, Path]:
    """stem -> path of every volume file in `folder` (not recursive, no hidden files)."""
    from ..io import SUPPORTED_EXTENSIONS, volume_stem
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        low = p.name.lower()
        if p.name.startswith(".") or not p.is_file() or not any(low.endswith(e) for e in SUPPORTED_EXTENSIONS):
            continue
        stem = volume_stem(p)
        if stem in out:
            raise InputError(f"two volumes named {stem!r} in {folder}: {out[stem].name} and {p.name}")
        out[stem] = p
    return out


def discover(folder, label_rule: str | None = DEFAULT_LABEL_RULE) -> list[Case]:
    """The cases of a folder; `label_rule` None: no label maps (every volume is an image)."""
    folder = Path(folder)
    files = _volume_files(folder)
    if label_rule is None:
        cases = [Case(_case_name(stem), str(p)) for stem, p in files.items()]
    else:
        image_sfx, label_sfx = parse_label_rule(label_rule)
        cases = []
        for stem, p in files.items():
            if stem.endswith(label_sfx):
                continue
            base = stem[: -len(image_sfx)] if image_sfx and stem.endswith(image_sfx) else stem
            lab = files.get(base + label_sfx)
            cases.append(Case(_case_name(base), str(p), str(lab) if lab else None))
    if not cases:
        raise InputError(f"no volume files in {folder} (looked for {', '.join(_extensions())})")
    _check_unique(cases, str(folder))
    return cases


def read_manifest(path) -> list[Case]:
    """The cases of a CSV manifest (see the module doc); a bad row names its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the manifest {path}: {getattr(err, 'strerror', None) or err}") from err
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"the manifest {path} is empty: it needs a header row with an 'image' column")
    header = [c.strip().lower() for c in rows[0]]
    unknown = [c for c in header if c not in MANIFEST_COLUMNS]
    if unknown or "image" not in header or len(set(header)) != len(header):
        raise InputError(f"the manifest {path} has columns {header}: use 'image' and optionally "
                         f"{', '.join(MANIFEST_COLUMNS[1:])}")
    base = path.parent
    cases = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            raise InputError(f"{path}, line {line}: {len(row)} fields for {len(header)} columns")
        cell = dict(zip(header, (c.strip() for c in row)))
        image, labels = cell.get("image") or None, cell.get("labels") or None
        if image is None and labels is None:
            raise InputError(f"{path}, line {line}: no image and no labels")
        image = str(_resolve(base, image)) if image else None
        labels = str(_resolve(base, labels)) if labels else None
        try:
            options = shlex.split(cell.get("options") or "")
        except ValueError as err:
            raise InputError(f"{path}, line {line}: cannot read the options ({err})") from err
        name = cell.get("name") or _case_name(_stem(image or labels))
        if not _NAME.match(name):
            raise InputError(f"{path}, line {line}: case name {name!r} cannot be a folder name "
                             "(letters, digits and _ . + = - only)")
        if image is None:
            options = ["--labels-only"] + options
        cases.append(Case(name, image, labels, options))
    if not cases:
        raise InputError(f"the manifest {path} lists no case")
    _check_unique(cases, str(path))
    return cases


def load_cases(inputs, label_rule: str | None = DEFAULT_LABEL_RULE) -> list[Case]:
    """A folder (discover) or a .csv file (read_manifest)."""
    p = Path(inputs)
    if p.is_dir():
        return discover(p, label_rule)
    if p.is_file() and p.name.lower().endswith(".csv"):
        return read_manifest(p)
    if not p.exists():
        raise InputError(f"{p} does not exist: give a folder of volumes or a CSV manifest")
    raise InputError(f"{p} is neither a folder of volumes nor a .csv manifest")


def _resolve(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def _stem(path: str) -> str:
    from ..io import volume_stem
    return volume_stem(path)


def _case_name(stem: str) -> str:
    # file names may hold characters a case name may not (spaces): those become "_"
    name = re.sub(r"[^A-Za-z0-9_.+=-]", "_", stem).lstrip(".") or "case"
    return name


def _check_unique(cases: list[Case], where: str) -> None:
    seen: dict[str, Case] = {}
    for c in cases:
        if c.name in seen:
            raise InputError(f"two cases named {c.name!r} in {where}: {seen[c.name].image or seen[c.name].labels} "
                             f"and {c.image or c.labels} (give a 'name' column)")
        seen[c.name] = c


def _extensions() -> list[str]:
    from ..io import SUPPORTED_EXTENSIONS
    return list(SUPPORTED_EXTENSIONS)
