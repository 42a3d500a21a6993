"""Validation of the paths an AVISeg JSON names: the one check every command uses.

A video's `file_names` are `<video>/<frame>.jpg`, relative to `<root>/<split>/JPEGImages`;
its folder name `<video>` also names `WAVAudios/<video>.wav` and `FEATAudios/<video>.npy`.
A hostile or broken JSON must not make avis read or write outside the data root, so a name
that is absolute (`/etc/x`, `C:x`, `\\\\server\\x`), climbs (`..`), holds a NUL or control
character, or is not `<video>/<frame>` is a DataError naming the entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from avis.errors import DataError


def check_class_name(name: object, where: str) -> str:
    """A category name as text; DataError when it holds a control character (C0, DEL, C1):
    names from a JSON file reach the terminal in tables and messages, where an escape
    sequence would clear the screen or retitle the window."""
    text = str(name)
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        raise DataError(f"{where}: category name {text!r} holds a control character")
    return text


def check_file_name(name: object, where: str) -> str:
    """`name` if it is a safe relative `<video>/<frame>` path; DataError otherwise."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: expected a relative path '<video>/<frame>.jpg', found {name!r}")
    if any(ord(c) < 32 for c in name):
        raise DataError(f"{where}: file name {name!r} holds a control character")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{where}: file name {name!r} is absolute; it must stay inside the split root")
    if ".." in path.parts:
        raise DataError(f"{where}: file name {name!r} contains '..'; it must stay inside the split root")
    if len(path.parts) < 2:
        raise DataError(f"{where}: file name {name!r} must be '<video>/<frame>.jpg'")
    return name


def video_folder(names: Sequence[object], where: str) -> str:
    """The `<video>` folder shared by every (checked) file name of one video."""
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{where}: field 'file_names' must be a non-empty list, found {names!r:.80}")
    checked = [check_file_name(n, f"{where} file_names[{i}]") for i, n in enumerate(names)]
    folders = {PurePosixPath(n).parts[0] for n in checked}  # as VideoRecord.name
    if len(folders) != 1:
        raise DataError(f"{where}: field 'file_names' spans several video folders {sorted(folders)}")
    return folders.pop()


def check_split_name(split: object) -> str:
    """A split name (`train`, `val`, `my_split`) names `<root>/<split>.json` and `<root>/<split>/`:
    it must be one plain path component, so `--split ../../x` cannot leave the data root."""
    if not isinstance(split, str) or not split or split in (".", "..") or any(
        c in split for c in "/\\\0:"
    ):
        raise DataError(f"split name {split!r}: expected one plain name such as train, val or test")
    return split
