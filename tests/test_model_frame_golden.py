"""Golden parity of the pixel decoder and frame decoder with the official AVISM (golden_S1).

The fixtures are produced by the official code (see shared/avism_reference/README.md); the
weights are loaded strictly from the official key names, by prefix only.
"""

from __future__ import annotations

import json

import pytest
import torch

from avis.models.frame_decoder import FrameDecoder
from avis.models.pixel_decoder import MSDeformAttnPixelDecoder
from shared_data import GOLDEN_S1

GOLDEN = GOLDEN_S1
FEATURE_NAMES = ("res2", "res3", "res4", "res5")
BACKBONE_CHANNELS = (256, 512, 1024, 2048)
AUDIO_DIM = 128
PIXEL_DECODER_FFN = 1024  # fixed in the official code
PIXEL_DECODER_POINTS = 4
ATOL, RTOL, MASK_ATOL = 1e-4, 1e-4, 5e-4

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden files not found at {GOLDEN}")


def _features(inputs: dict) -> list[torch.Tensor]:
    """The README's formula: relu(einsum('cr,trhw->tchw', A, B)) * scale, stride ascending."""
    factors = inputs["feature_factors"]
    return [
        torch.relu(torch.einsum("cr,trhw->tchw", factors[k]["A"].float(), factors[k]["B"].float()))
        * inputs["feature_scale"]
        for k in FEATURE_NAMES
    ]


def _build() -> tuple[MSDeformAttnPixelDecoder, FrameDecoder]:
    cfg = json.loads((GOLDEN / "config_small.json").read_text())
    state = torch.load(GOLDEN / "model_small.pth", weights_only=True)["model"]
    conv_dim = cfg["MODEL.SEM_SEG_HEAD.CONVS_DIM"]
    mask_dim = cfg["MODEL.SEM_SEG_HEAD.MASK_DIM"]
    pixel_decoder = MSDeformAttnPixelDecoder(
        in_channels=BACKBONE_CHANNELS,
        conv_dim=conv_dim,
        mask_dim=mask_dim,
        num_encoder_layers=cfg["MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"],
        num_heads=cfg["MODEL.MASK_FORMER.NHEADS"],
        num_points=PIXEL_DECODER_POINTS,
        ffn_dim=PIXEL_DECODER_FFN,
    )
    frame_decoder = FrameDecoder(
        in_channels=conv_dim,
        hidden_dim=cfg["MODEL.MASK_FORMER.HIDDEN_DIM"],
        num_queries=cfg["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"],
        num_classes=cfg["MODEL.SEM_SEG_HEAD.NUM_CLASSES"],
        nheads=cfg["MODEL.MASK_FORMER.NHEADS"],
        dim_feedforward=cfg["MODEL.MASK_FORMER.DIM_FEEDFORWARD"],
        dec_layers=cfg["MODEL.MASK_FORMER.DEC_LAYERS"] - 1,
        mask_dim=mask_dim,
        audio_dim=AUDIO_DIM,
        pre_norm=cfg["MODEL.MASK_FORMER.PRE_NORM"],
    )
    for module, prefix in (
        (pixel_decoder, "sem_seg_head.pixel_decoder."),
        (frame_decoder, "sem_seg_head.predictor."),
    ):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(sub, strict=True)
    return pixel_decoder, frame_decoder


@pytest.fixture(scope="module")
def model() -> tuple[MSDeformAttnPixelDecoder, FrameDecoder]:
    return _build()


def _close(got: torch.Tensor, want: torch.Tensor, atol: float = ATOL) -> None:
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=atol, rtol=RTOL)


@pytest.mark.parametrize("all_layer_masks", [True, False])
def test_inference_path_parity(model, all_layer_masks: bool) -> None:
    pixel_decoder, frame_decoder = model
    pixel_decoder.eval()
    frame_decoder.eval()
    inputs = torch.load(GOLDEN / "inputs.pt", weights_only=True)
    want = torch.load(GOLDEN / "outputs.pt", weights_only=True)
    feats, audio = _features(inputs), inputs["audio"]
    chunk = inputs["test_run_chunk_size"]
    logits, masks, queries, fusion, first = [], [], [], [], None
    with torch.no_grad():
        for start in range(0, inputs["num_frames"], chunk):
            pd = pixel_decoder([f[start : start + chunk] for f in feats])
            fd = frame_decoder(
                pd.multi_scale_features,
                pd.mask_features,
                audio[start : start + chunk],
                all_layer_masks=all_layer_masks,
            )
            if first is None:
                first = pd
            logits.append(fd.pred_logits[-1])
            masks.append(fd.pred_masks[-1])
            queries.append(fd.frame_queries)
            fusion.append(fd.audio_fusion)
    _close(first.stride4_features[0], want["pd_frame0_clip_mask_features"])
    assert len(first.multi_scale_features) == len(want["pd_frame0_multi_scale_features"])
    for got_map, want_map in zip(
        first.multi_scale_features, want["pd_frame0_multi_scale_features"]
    ):
        _close(got_map[0], want_map)
    _close(torch.cat(fusion, dim=1), want["frame_audio_fusion"])
    _close(torch.cat(logits), want["frame_pred_logits"])
    _close(torch.cat(masks), want["frame_pred_masks"], atol=MASK_ATOL)
    _close(torch.cat(queries, dim=1), want["frame_queries"])


def test_training_mode_parity(model) -> None:
    pixel_decoder, frame_decoder = model
    pixel_decoder.train()
    frame_decoder.train()
    golden = torch.load(GOLDEN / "train_T5.pt", weights_only=True)
    inputs, want = golden["inputs"], golden["outputs"]
    last_layers = want["frame_queries"].shape[0]
    pd = pixel_decoder(_features(inputs))
    fd = frame_decoder(
        pd.multi_scale_features,
        pd.mask_features,
        inputs["audio"],
        num_frame_query_layers=last_layers,
    )
    _close(fd.pred_logits.detach(), want["frame_pred_logits_all_layers"])
    _close(fd.pred_masks.detach(), want["frame_pred_masks_all_layers"], atol=MASK_ATOL)
    _close(fd.frame_queries.detach(), want["frame_queries"])
