"""A restricted reader for detectron2-style ``.pkl`` weight files.

detectron2's ImageNet weights (``R-50.pkl``: MSRA/Caffe2 or converted torchvision) are
pickles of numpy arrays, and Mask2Former's converted Swin weights are pickles of torch
tensors. A plain ``pickle.load`` would run whatever code the file names; this reader only
resolves the few globals needed to rebuild arrays and tensors and refuses everything else.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils

from avis.errors import CheckpointError

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]

PY2_ENCODING = "latin1"  # Caffe2-era pickles were written by Python 2 (numpy's advice)


def _storage_from_bytes(data: bytes) -> Any:
    """Safe stand-in for ``torch.storage._load_from_bytes`` (which uses weights_only=False)."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    numpy_objects = {
        "_reconstruct": _np_multiarray._reconstruct,
        "scalar": _np_multiarray.scalar,
    }
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for name, obj in numpy_objects.items():
            allowed[(module, name)] = obj
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        # a private numpy helper (used by pickled arrays), absent from numpy's stubs
        allowed[(module, "_frombuffer")] = _np_numeric._frombuffer  # type: ignore[attr-defined]
    return allowed


class WeightsUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays, torch tensors, dicts and plain values only."""

    def __init__(self, file: io.BufferedIOBase, source: Path) -> None:
        super().__init__(file, encoding=PY2_ENCODING)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise CheckpointError(
            f"{self.source}: refusing to load '{module}.{name}' from a weights pickle; "
            "only numpy arrays and torch tensors (in dicts) are allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(
            f"{self.source}: weights pickle uses persistent ids ({pid!r}); this is a torch "
            "archive, not a detectron2 .pkl - load it with torch.load(weights_only=True)"
        )


def read_weights_pickle(path: Path | str) -> Any:
    """Read a detectron2-style ``.pkl`` with ``WeightsUnpickler``.

    Raises ``CheckpointError`` (naming the file) when the file is missing, is not a pickle,
    or names anything but numpy/torch array reconstruction.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            return WeightsUnpickler(file, path).load()
    except CheckpointError:
        raise
    except FileNotFoundError as error:
        raise CheckpointError(f"{path}: weights file not found") from error
    except Exception as error:  # any unpickling failure: corrupt or not a pickle
        raise CheckpointError(f"{path}: cannot read as a weights pickle: {error}") from error
