"""Where `avis synth` may write, and writing a data set so that nothing is lost or mixed.

- A folder that holds anything but an earlier avis synthetic data set is never written into
  (it may be a real AVISeg root: its annotations would be overwritten).
- An earlier avis synthetic data set is replaced only with `force`, and then as a whole: no
  video of the old set stays behind next to the new JSON.
- The new set is generated in a hidden sibling folder and moved into place when complete, so
  a crash or Ctrl-C leaves the destination as it was.

Standard library only (the CLI checks the target before importing the generator).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from avis.data.synth.config import SYNTH_VERSION, VERSION_KEY
from avis.errors import AvisError, DataError

GENERATOR_NAME = "avis synthetic audio-visual benchmark"  # info.description of every split JSON
SPLITS = ("train", "val", "test", "demo")
SPLIT_SUBDIRS = frozenset({"JPEGImages", "WAVAudios", "FEATAudios", "FEATSpatial", "MP4"})
MAX_LISTED = 5


def _is_synthetic_json(path: Path) -> bool:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    info = obj.get("info") if isinstance(obj, dict) else None
    return isinstance(info, dict) and info.get("description") == GENERATOR_NAME


def synth_version(obj: object, source: str = "split JSON") -> int:
    """The generator version of a loaded split JSON: info["avis_synth_version"], or 1 where the
    key is missing (files written before versions existed). DataError for a malformed value, or
    a version newer than this avis knows."""
    info = obj.get("info") if isinstance(obj, dict) else None
    value = info.get(VERSION_KEY, 1) if isinstance(info, dict) else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DataError(f"{source}: info.{VERSION_KEY} must be a positive integer, found {value!r}")
    if value > SYNTH_VERSION:
        raise DataError(
            f"{source}: made by synthetic generator version {value}; this avis knows versions "
            f"up to {SYNTH_VERSION} (update avis)"
        )
    return value


def foreign_entries(root: Path) -> list[str]:
    """Entries of `root` that an avis synthetic data set does not have (empty: it is one, or
    an empty folder). A split JSON that avis did not write counts as foreign."""
    foreign = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name.endswith(".json") and name[: -len(".json")] in SPLITS and entry.is_file():
            if not _is_synthetic_json(entry):
                foreign.append(f"{name} (not written by avis synth)")
        elif name in SPLITS and entry.is_dir() and not entry.is_symlink():
            foreign += [f"{name}/{sub.name}" for sub in sorted(entry.iterdir()) if sub.name not in SPLIT_SUBDIRS]
        else:
            foreign.append(name)
    return foreign


def check_target(out: Path, force: bool) -> None:
    """Raise AvisError unless `avis synth --out out` may write there (see the module docstring)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AvisError(f"{out}: is a file; --out must be a folder (the data set root)")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = foreign_entries(out)
    if foreign:
        listed = ", ".join(foreign[:MAX_LISTED]) + (" ..." if len(foreign) > MAX_LISTED else "")
        raise AvisError(
            f"{out}: holds files that are not part of an avis synthetic data set ({listed}); "
            "avis synth writes only into a new or empty folder, or replaces (--force) an "
            "earlier synthetic data set"
        )
    if not force:
        raise AvisError(f"{out}: holds an avis synthetic data set already (use --force to replace it)")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a fresh hidden sibling folder to generate into. On success its entries replace
    those of `out` (renames: the folder itself stays, so `--out .` is safe; the old entries are
    deleted afterwards); on an exception the staging folder is removed and `out` is untouched."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.synth-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        out.mkdir(exist_ok=True)
        old.mkdir()
        for entry in list(out.iterdir()):
            os.replace(entry, old / entry.name)
        for entry in list(stage.iterdir()):
            os.replace(entry, out / entry.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
