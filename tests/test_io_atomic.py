"""`avis.io.atomic`: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avis.io.atomic import atomic_open, atomic_path, write_json_atomic, write_text_atomic
from avis.io.npy import save_npy_atomic


def test_success_replaces_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.json"
    write_json_atomic(path, {"k": 1})
    write_json_atomic(path, {"k": 2})
    assert json.loads(path.read_text()) == {"k": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


@pytest.mark.parametrize("writer", ["text", "open", "path", "npy"])
def test_failure_midway_keeps_the_old_file(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "out.npy"
    path.write_bytes(b"old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        if writer == "text":
            write_text_atomic(path, _Exploding(Boom))  # type: ignore[arg-type]
        elif writer == "open":
            with atomic_open(path) as handle:
                handle.write(b"half of the new")
                raise Boom
        elif writer == "path":
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                raise Boom
        else:
            save_npy_atomic(path, _ExplodingArray(Boom))  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"v": float("nan")})
    assert not list(tmp_path.iterdir())


class _Exploding(str):
    def __new__(cls, error):
        obj = super().__new__(cls, "x")
        obj.error = error
        return obj

    def encode(self, *args, **kwargs):  # noqa: ARG002
        raise self.error


class _ExplodingArray(np.ndarray):
    def __new__(cls, error):
        obj = np.zeros(3).view(cls)
        obj.error = error
        return obj

    def __reduce__(self):
        raise self.error

    def tobytes(self, *args, **kwargs):  # noqa: ARG002
        raise self.error

    def tofile(self, *args, **kwargs):  # noqa: ARG002
        raise self.error
