"""``spatial_audio_cues``: each frame query is handed to the video module with the band profile
of the spatial-audio map under its own mask (avis.models.spatial_audio.SpatialAudioTerm.token_cues)."""

from __future__ import annotations

import pytest
import torch

from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.spatial_audio import SpatialAudioTerm

SMALL = dict(num_classes=3, test_short_side=64, spatial_audio_bands=4, spatial_audio_bins=8,
             spatial_audio_keys=True, per_frame_mask_embed=True)  # fmt: skip


def _profiles(term: SpatialAudioTerm, cols: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """What token_cues hands its MLP: the input of the first layer."""
    seen = []
    assert term.cue_embed is not None
    hook = term.cue_embed.layers[0].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    term.token_cues(cols, masks)
    hook.remove()
    return seen[0]


def test_a_token_reads_the_bands_sounding_under_its_mask():
    term = SpatialAudioTerm(bands=3, bins=4, mask_dim=2, cue_dim=5)
    cols = torch.zeros(2, 3, 8)  # (N, B, Wm)
    cols[:, 0, :4] = 1.0  # band 0 sounds on the left half
    cols[:, 2, 4:] = 2.0  # band 2 on the right half
    masks = torch.full((1, 2, 3, 6, 8), -30.0)  # (L, N, fQ, Hm, Wm): all off
    masks[0, :, 0, 1:3, :4] = 30.0  # query 0: a blob on the left
    masks[0, :, 1, :, 4:] = 30.0  # query 1: the right half
    masks[0, 0, 2, 0, 3:5] = 30.0  # query 2, frame 0: straddles the middle
    profile = _profiles(term, cols, masks)
    assert profile.shape == (1, 2, 3, 3)
    torch.testing.assert_close(profile[0, :, 0], torch.tensor([[1.0, 0, 0]] * 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(profile[0, :, 1], torch.tensor([[0, 0, 2.0]] * 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(profile[0, 0, 2], torch.tensor([0.5, 0, 1.0]), atol=1e-5, rtol=0)
    # the height of a mask does not weigh its columns differently from its width's share
    masks[0, :, 0, :, :4] = 30.0
    torch.testing.assert_close(_profiles(term, cols, masks)[0, :, 0], profile[0, :, 0])
    assert torch.count_nonzero(term.token_cues(cols, masks)) == 0  # zero-initialised
    assert SpatialAudioTerm(bands=3, bins=4, mask_dim=2).cue_embed is None
    with pytest.raises(ValueError, match="spatial_audio_cues"):
        SpatialAudioTerm(bands=3, bins=4, mask_dim=2).token_cues(cols, masks)


def _inputs(batch: int = 1, frames: int = 3):
    torch.manual_seed(1)
    pictures = torch.rand(batch, frames, 3, 64, 64) * 255
    audio = torch.cat([torch.randn(batch, frames, 128), torch.rand(batch, frames, 32)], -1)
    return pictures, audio


def test_the_model_with_cues_starts_as_the_model_without():
    plain = build_avism(get_preset("avism_tiny", **SMALL)).eval()
    cued = build_avism(get_preset("avism_tiny", spatial_audio_cues=True, **SMALL)).eval()
    extra = set(cued.state_dict()) - set(plain.state_dict())
    assert extra == {f"spatial_audio.cue_embed.layers.{i}.{w}" for i in (0, 1) for w in ("weight", "bias")}
    assert set(plain.state_dict()) <= set(cued.state_dict())
    cued.load_state_dict({**cued.state_dict(), **plain.state_dict()}, strict=True)
    frames, audio = _inputs()
    with torch.no_grad():
        want = plain(frames, audio, [(64, 48)])
        got = cued(frames, audio, [(64, 48)])
        torch.testing.assert_close(got.video.pred_masks, want.video.pred_masks)
        torch.testing.assert_close(got.video.pred_logits, want.video.pred_logits)
        cued.spatial_audio.cue_embed.layers[-1].weight.normal_()
        moved = cued(frames, audio, [(64, 48)])
    torch.testing.assert_close(moved.frame.pred_masks, want.frame.pred_masks)  # the frame level is untouched
    assert not torch.allclose(moved.video.pred_logits, want.video.pred_logits)
    # the cue follows the maps: the same pictures heard elsewhere give other tracks
    with torch.no_grad():
        mirrored = audio.clone()
        mirrored[..., 128:] = audio[..., 128:].view(1, 3, 4, 8).flip(-1).flatten(-2)
        elsewhere = cued(frames, mirrored, [(64, 48)])
    assert not torch.allclose(elsewhere.video.pred_logits, moved.video.pred_logits)


def test_inference_hands_over_the_same_cued_queries_as_training():
    """Chunk encoding + one video-module pass over the video = the full forward (eval mode)."""
    torch.manual_seed(0)
    model = build_avism(get_preset("avism_tiny", spatial_audio_cues=True, **SMALL)).eval()
    with torch.no_grad():
        for param in model.spatial_audio.parameters():
            param.normal_()
    frames, audio = _inputs()
    with torch.no_grad():
        full = model(frames, audio, [(64, 48)])
        chunk = model.encode_chunk(frames[0], audio[0], (64, 48))
        video = model.decode_video(chunk.frame_queries, audio[0])
    torch.testing.assert_close(video.pred_logits[-1, 0], full.video.pred_logits[-1, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(video.pred_mask_embed[-1, 0], full.video.pred_mask_embed[-1, 0], rtol=1e-4, atol=1e-5)


def test_cues_learn_and_do_not_reach_back_into_the_frame_masks():
    torch.manual_seed(0)
    model = build_avism(get_preset("avism_tiny", spatial_audio_cues=True, **SMALL)).train()
    frames, audio = _inputs(batch=2, frames=2)
    out = model(frames, audio, [(64, 48), (64, 64)])
    out.video.pred_logits.sum().backward()
    cue = model.spatial_audio.cue_embed
    assert cue.layers[-1].weight.grad.abs().sum() > 0  # zero start, but the last layer learns
    # the masks the profile is weighted by are not differentiated through the cue: a loss on
    # the cues alone leaves the frame decoder's mask head without gradient
    model.zero_grad()
    cols = model.spatial_audio.columns(audio[..., 128:].flatten(0, 1), [48, 48, 64, 64], 16)
    with torch.no_grad():
        cue.layers[-1].weight.normal_()
    masks = out.frame.pred_masks.detach().requires_grad_()
    model.spatial_audio.token_cues(cols, masks).sum().backward()
    assert masks.grad is None


def test_cues_need_the_spatial_term():
    with pytest.raises(ValueError, match="spatial_audio_cues needs spatial_audio_bands"):
        build_avism(get_preset("avism_tiny", num_classes=3, spatial_audio_cues=True))
