"""Checks of the paths a command reads and writes, done before any slow work starts.

Every command that writes files checks its outputs first, so that a wrong `--out` fails in a
fraction of a second instead of after the model ran, and nothing the user has is overwritten
without `--force`:

- `check_output_file`: a file is expected; refuses a directory, an existing file (unless
  `force`), a path that is one of the inputs, a parent that is a file, a folder that cannot
  be written.
- `check_output_dir`: a folder is expected; refuses a file and a folder that cannot be written.
- `check_input_file`: the file exists and is a regular file (not a folder).
- `check_source`: a live source (`avis predict --online`): "-" (stdin), a URL, or an existing
  file or named pipe.

Only the standard library is imported here (the CLI calls it before importing torch).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from avis.errors import AvisError


class OutputError(AvisError):
    """An output path cannot or must not be written."""


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable_dir(folder: Path, what: str = "output folder") -> None:
    """`folder` (existing or to be created) can hold new files: its nearest existing ancestor is
    a folder in which a file can be created (a real probe, so it also holds for root and for
    read-only file systems)."""
    folder = Path(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise OutputError(f"{folder}: cannot be the {what}: {base} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".avis_probe_"):
            pass
    except OSError as err:
        raise OutputError(f"{folder}: cannot write there ({err.strerror or err})") from None


def same_file(a: Path, b: Path) -> bool:
    """The two paths name the same file (also through links)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.absolute().resolve() == b.absolute().resolve()


def check_output_file(
    path: Path,
    *,
    force: bool = False,
    inputs: Iterable[Path | None] = (),
    option: str = "--out",
) -> None:
    """Raise OutputError unless `path` may be written as a file (see the module docstring)."""
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, Path(source)):
            raise OutputError(f"{path}: {option} is also an input ({source}); choose another file")
    if path.is_dir():
        raise OutputError(f"{path}: {option} is a folder; a file name is expected")
    if path.exists() and not force:
        raise OutputError(f"{path}: exists already (use --force to overwrite it)")
    check_writable_dir(path.parent, f"folder of {option}")


def check_output_dir(path: Path, *, option: str = "--out") -> None:
    """Raise OutputError unless `path` is (or can be created as) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: {option} is a file; a folder is expected")
    check_writable_dir(path, f"{option} folder")


def check_input_file(path: Path, what: str = "input file") -> Path:
    """The path names an existing regular file; AvisError (one line) otherwise."""
    path = Path(path)
    if path.is_dir():
        raise AvisError(f"{path}: is a folder; the {what} must be a file")
    if path.exists() and not path.is_file():
        raise AvisError(f"{path}: {special_file_kind(path)}, not a regular file; the {what} must be a file")
    if not path.is_file():
        raise AvisError(f"{path}: {what} not found")
    return path


def special_file_kind(path: Path) -> str:
    """What an existing path that is neither a folder nor a regular file is (said instead of
    "not found", which is wrong for /dev/zero, a named pipe or a socket)."""
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


STDIN = "-"  # the live source that reads standard input


def is_url(source: str) -> bool:
    """A stream URL (rtsp://, http://, udp://, ...: anything FFmpeg's protocols open)."""
    return "://" in source


def check_source(source: str, what: str = "--online source") -> None:
    """A live source is "-", a URL, or an existing file or named pipe; AvisError (one line)
    otherwise (a folder, a missing path)."""
    if not source:
        raise AvisError(f"the {what} is empty: give a media file, a named pipe, '-' for stdin or a URL")
    if source == STDIN or is_url(source):
        return
    path = Path(source)
    if path.is_dir():
        raise AvisError(f"{path}: is a folder; the {what} must be a media file, a named pipe, '-' or a URL")
    if not path.exists():
        raise AvisError(f"{path}: {what} not found (give a media file, a named pipe, '-' for stdin or a URL)")
