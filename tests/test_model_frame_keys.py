"""The frame-level half builds exactly the official state-dict keys and shapes (R50, Swin-L)."""

from __future__ import annotations

import json

import pytest
import torch

from avis.models.frame_decoder import FrameDecoder
from avis.models.pixel_decoder import MSDeformAttnPixelDecoder
from shared_data import AVISM_REFERENCE

REFERENCE = AVISM_REFERENCE
CASES = {
    # listing file: (backbone channels stride ascending, frame queries)
    "keys_R50.json": ((256, 512, 1024, 2048), 100),
    "keys_SwinL.json": ((192, 384, 768, 1536), 200),
}


def _official(listing: str, prefix: str) -> dict[str, tuple[int, ...]]:
    keys = json.loads((REFERENCE / listing).read_text())["keys"]
    return {k["key"][len(prefix) :]: tuple(k["shape"]) for k in keys if k["key"].startswith(prefix)}


def _ours(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("listing", sorted(CASES))
def test_official_keys_and_shapes(listing: str) -> None:
    if not (REFERENCE / listing).is_file():
        pytest.skip(f"{REFERENCE / listing} not found")
    channels, queries = CASES[listing]
    with torch.device("meta"):  # shapes only, no memory or init cost
        pixel = MSDeformAttnPixelDecoder(channels)
        frame = FrameDecoder(num_queries=queries)
    assert _ours(pixel) == _official(listing, "sem_seg_head.pixel_decoder.")
    assert _ours(frame) == _official(listing, "sem_seg_head.predictor.")
