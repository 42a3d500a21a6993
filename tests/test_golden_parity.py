"""End-to-end parity with the official AVISM code on ../shared/avism_reference/golden_S1.

The model is built from the golden config, loaded from the official-format weights through
the converter, fed the golden backbone features (the backbone is replaced) and compared with
every recorded intermediate and final output, within the README's tolerances.

`AVIS_TEST_DEVICE=cuda` runs the same checks on a GPU under `--precision fp32` (strict: TF32
off), as `benchmarks/gpu_check.sh` does; the default is the CPU.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from avis.inference.video import (
    InferenceOptions,
    InferenceTrace,
    features_encoder,
    predict_video,
    predict_video_streaming,
)
from avis.models.avism import FEATURE_NAMES, build_avism_with_backbone
from avis.models.checkpoint import load_state_dict_strict, official_to_avis
from avis.models.config import from_detectron2
from avis.precision import precision_context
from shared_data import GOLDEN_S1

GOLDEN = GOLDEN_S1
R50_CHANNELS = (256, 512, 1024, 2048)
ATOL = RTOL = 1e-4
MASK_LOGIT_ATOL = 5e-4
MAX_FLIPPED_FRACTION = 1e-4  # README: "a handful of flipped pixels (<= 0.01 %)"
DEVICE = torch.device(os.environ.get("AVIS_TEST_DEVICE", "cpu"))

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason="golden reference not available")


def _load(name: str):
    return torch.load(GOLDEN / name, weights_only=True)


def golden_features(inputs: dict) -> dict[str, torch.Tensor]:
    """The README's formula: relu(einsum('cr,trhw->tchw', A, B)) * scale, exact in float32."""
    scale = inputs["feature_scale"]
    return {
        name: torch.relu(torch.einsum("cr,trhw->tchw", f["A"].float(), f["B"].float())) * scale
        for name, f in inputs["feature_factors"].items()
    }


def golden_model():
    cfg = from_detectron2(json.loads((GOLDEN / "config_small.json").read_text()))
    model = build_avism_with_backbone(cfg, nn.Identity(), R50_CHANNELS)
    load_state_dict_strict(
        model, official_to_avis(_load("model_small.pth")["model"], "model_small.pth"), "golden"
    )
    return model.eval().to(DEVICE), cfg


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model, cfg = golden_model()
    inputs, outputs = _load("inputs.pt"), _load("outputs.pt")
    inputs["audio"] = inputs["audio"].to(DEVICE)
    feats = {name: f.to(DEVICE) for name, f in golden_features(inputs).items()}
    return model, cfg, inputs, outputs, feats


@pytest.fixture(autouse=True)
def strict_fp32():
    with precision_context("fp32", DEVICE):
        yield


def _close(actual, expected, atol=ATOL, rtol=RTOL, name=""):
    torch.testing.assert_close(
        actual.float().cpu(), expected.float(), atol=atol, rtol=rtol, msg=name
    )


def _run(setup, streaming: bool = False):
    model, cfg, inputs, _, feats = setup
    trace = InferenceTrace()
    run = predict_video_streaming if streaming else predict_video
    pred = run(
        model,
        features_encoder(model, feats, inputs["audio"]),
        inputs["audio"],
        tuple(inputs["image_size"]),
        tuple(inputs["padded_size"]),
        tuple(inputs["out_size"]) if inputs["height_width_given"] else None,
        InferenceOptions.from_config(cfg),
        trace,
    )
    return pred, trace


@pytest.fixture(scope="module")
def standard(setup):
    return _run(setup)


def test_config_maps_scenario(setup) -> None:
    _, cfg, inputs, _, _ = setup
    assert cfg.window_size == inputs["enc_window_size"]
    assert cfg.test_run_chunk_size == inputs["test_run_chunk_size"]
    assert cfg.test_interpolate_chunk_size == inputs["test_interpolate_chunk_size"]
    assert cfg.top_k == inputs["detections_per_image"]


def test_pixel_decoder_frame0(setup) -> None:
    model, _, _, out, feats = setup
    with torch.no_grad():
        pix = model.pixel_decoder([feats[n][:1] for n in FEATURE_NAMES])
        video_mf = model.video_module.mask_features(pix.stride4_features)
    _close(pix.stride4_features[0], out["pd_frame0_clip_mask_features"])
    for ours, ref in zip(pix.multi_scale_features, out["pd_frame0_multi_scale_features"]):
        _close(ours[0], ref)
    _close(video_mf[0], out["avism_mask_features_frame0"])


def test_inference_intermediates(setup, standard) -> None:
    _, _, _, out, _ = setup
    _, tr = standard
    _close(torch.cat(tr.frame_logits), out["frame_pred_logits"], name="frame logits")
    _close(torch.cat(tr.frame_masks), out["frame_pred_masks"], atol=MASK_LOGIT_ATOL)
    _close(tr.frame_queries[None], out["frame_queries"], name="frame queries")
    _close(torch.cat(tr.audio_fusion, dim=1), out["frame_audio_fusion"], name="audio fusion")
    video = tr.video
    _close(video.enc_frame_tokens, out["avism_enc_frame_query"], name="frame encoder")
    _close(video.enc_audio_tokens, out["avism_enc_av_feat"], name="av encoder")
    _close(video.pred_logits[-1], out["avism_pred_logits"], name="video logits")
    _close(video.pred_mask_embed[-1], out["avism_pred_mask_embed"], name="mask embed")
    _close(video.pred_fq_embed, out["avism_pred_fq_embed"], name="fq embed")
    _close(video.pred_cq_embed[-1], out["avism_pred_cq_embed"], name="cq embed")


def test_topk_scores_and_keep_set(setup, standard) -> None:
    _, _, _, out, _ = setup
    _, tr = standard
    ours = torch.argsort(tr.candidates.flat_index)
    ref = torch.argsort(out["topk_flat_index"])
    assert torch.equal(tr.candidates.flat_index[ours].cpu(), out["topk_flat_index"][ref])
    assert torch.equal(tr.candidates.labels[ours].cpu(), out["topk_labels"][ref])
    assert torch.equal(tr.candidates.query_index[ours].cpu(), out["topk_query_index"][ref])
    _close(tr.candidates.scores[ours], out["topk_scores"][ref], name="top-k scores")
    _close(tr.numerator[ours], out["numerator"][ref], atol=0, rtol=1e-4, name="numerator")
    _close(tr.denominator[ours], out["denominator"][ref], atol=0, rtol=1e-4, name="denominator")
    _close(tr.reweighted[ours], out["topk_scores_reweighted"][ref], name="reweighted")
    kept = set(tr.candidates.flat_index[tr.keep_index].tolist())
    assert kept == set(out["topk_flat_index"][out["keep_index"]].tolist())


def _by_flat_index(pred, tr, out):
    ours = tr.candidates.flat_index[tr.keep_index].cpu()
    ref = out["topk_flat_index"][out["keep_index"]]
    return torch.argsort(ours), torch.argsort(ref)


@pytest.mark.parametrize("streaming", [False, True])
def test_final_outputs(setup, standard, streaming: bool) -> None:
    _, _, _, out, _ = setup
    pred, tr = _run(setup, streaming=True) if streaming else standard
    assert list(pred.image_size) == list(out["final_image_size"])
    o, r = _by_flat_index(pred, tr, out)
    assert torch.equal(pred.labels[o], out["final_labels"][r])
    _close(pred.scores[o], out["final_scores"][r], name="final scores")
    assert pred.masks.shape == out["final_masks"].shape and pred.masks.dtype == torch.bool
    flipped = (pred.masks[o] != out["final_masks"][r]).sum().item()
    assert flipped <= MAX_FLIPPED_FRACTION * pred.masks.numel(), flipped


def test_training_mode_outputs() -> None:
    model, _ = golden_model()
    model.train()
    data = _load("train_T5.pt")
    inp, out = data["inputs"], data["outputs"]
    feats = {name: f.to(DEVICE) for name, f in golden_features(inp).items()}
    with torch.no_grad():
        res = model.forward_features(feats, inp["audio"][None].to(DEVICE))
        pix = model.pixel_decoder([feats[n] for n in FEATURE_NAMES])
        mask_features = model.video_module.mask_features(pix.stride4_features)
    _close(res.frame.pred_logits, out["frame_pred_logits_all_layers"], name="frame logits")
    _close(res.frame.pred_masks, out["frame_pred_masks_all_layers"], atol=MASK_LOGIT_ATOL)
    _close(res.frame.frame_queries, out["frame_queries"], name="frame queries")
    _close(mask_features, out["avism_mask_features"], name="video mask features")
    v = res.video
    _close(v.pred_logits[-1], out["avism_pred_logits"], name="video logits")
    _close(v.pred_mask_embed[-1], out["avism_pred_mask_embed"], name="mask embed")
    _close(v.pred_cq_embed[-1], out["avism_pred_cq_embed"], name="cq embed")
    _close(v.pred_fq_embed, out["avism_pred_fq_embed"], name="fq embed")
    _close(v.pred_masks[-1], out["avism_pred_masks"], atol=MASK_LOGIT_ATOL)
    _close(v.pred_logits[:-1], out["avism_aux_pred_logits"], name="aux logits")
    _close(v.pred_mask_embed[:-1], out["avism_aux_pred_mask_embed"], name="aux mask embed")
    _close(v.pred_cq_embed[:-1], out["avism_aux_pred_cq_embed"], name="aux cq embed")
    _close(v.pred_masks[:-1], out["avism_aux_pred_masks"], atol=MASK_LOGIT_ATOL)
