"""The optional per-frame audio term of the video mask features (AVISMConfig.audio_mask_bias)."""

import torch

from avis.models.avism import build_avism
from avis.models.config import get_preset

SMALL = dict(
    backbone_kwargs={"norm": "GN", "stem_channels": 8},
    conv_dim=16, mask_dim=16, norm_groups=4, pixel_decoder_layers=1, pixel_decoder_ffn_dim=32,
    frame_hidden_dim=16, frame_ffn_dim=32, frame_queries=4, frame_dec_layers=1, last_layer_num=1,
    video_hidden_dim=16, video_ffn_dim=32, video_queries=3, video_enc_layers=1, video_dec_layers=1,
)  # fmt: skip


def test_off_by_default_and_no_extra_weights():
    plain = build_avism(get_preset("avism_tiny", **SMALL))
    gated = build_avism(get_preset("avism_tiny", audio_mask_bias=True, **SMALL))
    extra = set(gated.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("video_module.audio_mask_bias.") for k in extra)
    assert set(plain.state_dict()) <= set(gated.state_dict())


def test_a_frames_audio_moves_its_video_masks_only():
    torch.manual_seed(0)
    model = build_avism(get_preset("avism_tiny", audio_mask_bias=True, **SMALL)).eval()
    torch.nn.init.normal_(model.video_module.audio_mask_bias.layers[-1].weight)
    frames = torch.rand(1, 3, 3, 32, 32) * 255
    frames[:, 2] = frames[:, 1]  # frames 1 and 2 look the same
    audio = torch.randn(1, 3, model.video_module.av_proj.in_features)
    stride4 = model.pixel_decoder(
        [model.backbone_features(frames, [(32, 32)])[n] for n in ("res2", "res3", "res4", "res5")]
    ).stride4_features
    same = model.video_module.mask_features(stride4, audio[0])
    other = audio.clone()
    other[0, 2] = torch.randn_like(other[0, 2])
    changed = model.video_module.mask_features(stride4, other[0])
    assert torch.equal(same[:2], changed[:2])
    assert not torch.allclose(same[2], changed[2])
