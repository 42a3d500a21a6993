"""The assembled AVISM model (tiny preset): training outputs and shapes for B > 1, gradients,
determinism, input normalisation and padding.

Letters: B clips, T frames, Hp x Wp padded size, Hm x Wm = Hp/4 x Wp/4.
"""

from __future__ import annotations

import pytest
import torch

from avis.models import PRESETS, AVISMOutput, build_avism, get_preset

B, T, HP, WP = 2, 3, 64, 96


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_preset("avism_tiny", window_size=2)
    return build_avism(cfg), cfg


def _inputs(cfg, b=B, t=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, t, 3, HP, WP, generator=g) * 255
    frames[1:, :, :, 48:, :] = 0  # clip 1 is 48 x 80, zero-padded
    frames[1:, :, :, :, 80:] = 0
    audio = torch.randn(b, t, cfg.audio_dim, generator=g)
    return frames, audio, [(HP, WP), (48, 80)][:b]


def test_training_output_contract(tiny) -> None:
    model, cfg = tiny
    model.train()
    frames, audio, sizes = _inputs(cfg)
    out = model(frames, audio, sizes)
    assert isinstance(out, AVISMOutput)
    fq, cq, k, lf = cfg.frame_queries, cfg.video_queries, cfg.num_classes, cfg.last_layer_num
    dl, lv, hm, wm = cfg.frame_dec_layers + 1, cfg.video_dec_layers, HP // 4, WP // 4
    assert out.frame.pred_logits.shape == (dl, B * T, fq, k + 1)
    assert out.frame.pred_masks.shape == (dl, B * T, fq, hm, wm)
    assert out.frame.frame_queries.shape == (lf, B * T, fq, cfg.frame_hidden_dim)
    assert out.video.pred_logits.shape == (lv, lf, B, cq, k + 1)
    assert out.video.pred_mask_embed.shape == (lv, lf, B, cq, cfg.mask_dim)
    assert out.video.pred_masks.shape == (lv, lf, B, cq, T, hm, wm)
    assert out.video.pred_fq_embed.shape == (lf, B, T, fq, cfg.video_hidden_dim)
    assert out.video.pred_cq_embed.shape == (lv, lf, B, cq, cfg.video_hidden_dim)


def test_gradients_reach_every_trainable_parameter() -> None:
    torch.manual_seed(1)
    cfg = get_preset("avism_tiny", window_size=2)
    model = build_avism(cfg).train()
    # the official init zeroes the deformable offset/weight projections, which makes the
    # gradient of their inputs (e.g. the level embedding) exactly 0 at init: perturb all
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    frames, audio, sizes = _inputs(cfg)
    out = model(frames, audio, sizes)
    tensors = [
        out.frame.pred_logits,
        out.frame.pred_masks,
        out.video.pred_logits,
        out.video.pred_masks,
        out.video.pred_fq_embed,
        out.video.pred_cq_embed,
    ]
    sum(t.float().square().mean() for t in tensors).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [
        n
        for n, p in trainable
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not missing, missing


def test_clips_in_a_batch_are_independent(tiny) -> None:
    """B clips together give what each gives alone (backbone norms are per frame: GroupNorm)."""
    model, cfg = tiny
    model.train()
    frames, audio, sizes = _inputs(cfg)
    with torch.no_grad():
        both = model(frames, audio, sizes)
        second = model(frames[1:], audio[1:], sizes[1:])
    torch.testing.assert_close(
        both.video.pred_logits[:, :, 1], second.video.pred_logits[:, :, 0], atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        both.video.pred_masks[:, :, 1], second.video.pred_masks[:, :, 0], atol=1e-3, rtol=1e-4
    )


def test_eval_forward_is_deterministic(tiny) -> None:
    model, cfg = tiny
    model.eval()
    frames, audio, sizes = _inputs(cfg, b=1, t=4)
    with torch.no_grad():
        a, b = model(frames, audio, sizes), model(frames, audio, sizes)
    assert a.frame.frame_queries.shape[0] == 1  # eval hands over the last layer only
    assert torch.equal(a.video.pred_logits, b.video.pred_logits)
    assert torch.equal(a.video.pred_masks, b.video.pred_masks)


def test_normalisation_rezeroes_padding(tiny) -> None:
    model, cfg = tiny
    frames, _, sizes = _inputs(cfg)
    x = model.normalize(frames, sizes).view(B, T, 3, HP, WP)
    assert torch.all(x[1, :, :, 48:] == 0) and torch.all(x[1, :, :, :, 80:] == 0)
    mean = torch.tensor(cfg.pixel_mean).view(3, 1, 1)
    std = torch.tensor(cfg.pixel_std).view(3, 1, 1)
    torch.testing.assert_close(x[0, 0], (frames[0, 0] - mean) / std)


def test_unpadded_frames_are_rejected(tiny) -> None:
    model, cfg = tiny
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.zeros(1, 2, 3, 50, 64), torch.zeros(1, 2, cfg.audio_dim), [(50, 64)])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build(name: str) -> None:
    with torch.device("meta"):
        model = build_avism(PRESETS[name]())
    assert model.video_module.fq_pos.weight.shape[0] == PRESETS[name]().frame_queries


def test_config_round_trip_and_detectron2_mapping() -> None:
    import json

    from avis.models import AVISMConfig, from_detectron2

    cfg = get_preset("avism_tiny", window_size=0)
    assert AVISMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown AVISMConfig fields"):
        AVISMConfig.from_dict({"hidden": 3})
    mapped = from_detectron2(
        {
            "MODEL.MASK_FORMER.DEC_LAYERS": 10,
            "MODEL.MASK_FORMER.NHEADS": 4,
            "MODEL.AVISM.SIM_WEIGHT": 0.0,
        }
    )
    assert mapped.frame_dec_layers == 9 and mapped.pixel_decoder_heads == 4
    assert mapped.frame_heads == 4 and not mapped.use_sim
    assert mapped.video_hidden_dim == PRESETS["avism_r50"]().video_hidden_dim
