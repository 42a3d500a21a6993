"""`cross_frame_weight`: each matched track's mask embedding of one frame read on the clip's
next frame (avis.losses.criterion, "Across frames")."""

import pytest
import torch

from avis.data.batch import ClipTargets
from avis.engine.build import build_criterion
from avis.engine.config import TrainConfig
from avis.errors import DataError
from avis.losses import AVISMCriterion
from avis.losses.targets import prepare_video_targets
from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.outputs import AVISMOutput, FrameOutput, VideoOutput
from avis.models.video_module import video_masks

K, B, T, FQ, CQ, CM = 3, 2, 2, 4, 5, 6
DL, LF, LV = 2, 2, 2
HM = WM = 6


def clip(rows: list[tuple[int, int]], labels: list[int]) -> ClipTargets:
    """One instance per (row in frame 0, row in frame 1) on the Hm x Wm grid, all sounding."""
    masks = torch.zeros(len(rows), T, HM, WM, dtype=torch.bool)
    for n, per_frame in enumerate(rows):
        for t, row in enumerate(per_frame):
            masks[n, t, row] = True
    return ClipTargets(
        labels=torch.tensor(labels),
        track_ids=torch.arange(len(rows)) + 10,
        masks=masks,
        valid=torch.ones(len(rows), T, dtype=torch.bool),
    )


def output(embed: torch.Tensor, features: torch.Tensor, seed: int = 0) -> AVISMOutput:
    """Random class and frame predictions; video masks read from `embed` (Lv, Lf, B, cQ, T, Cm)
    and `features` (B, T, Cm, Hm, Wm) as the model makes them."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    return AVISMOutput(
        frame=FrameOutput(r(DL, B * T, FQ, K + 1), r(DL, B * T, FQ, HM, WM), r(LF, B * T, FQ, CM)),
        video=VideoOutput(
            pred_logits=r(LV, LF, B, CQ, K + 1),
            pred_mask_embed=embed,
            pred_masks=video_masks(embed, features, per_frame=True),
            pred_fq_embed=r(LF, B, T, FQ, CM),
            pred_cq_embed=r(LV, LF, B, CQ, CM),
            mask_features=features,
        ),
    )


@pytest.fixture
def clips() -> list[ClipTargets]:
    # clip 0: two look-alikes (class 1) that swap rows between the frames, and a class-2 one
    return [clip([(0, 3), (3, 0), (5, 5)], [1, 1, 2]), clip([(1, 2)], [0])]


def random_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    embed = torch.randn(LV, LF, B, CQ, T, CM, generator=gen)
    features = torch.randn(B, T, CM, HM, WM, generator=gen) * 2
    return embed, features


def test_off_by_default_and_a_zero_weight_adds_nothing(clips):
    out = output(*random_inputs())
    plain = AVISMCriterion(K, num_points=None)(out, clips)
    assert not any(name.startswith("across") for name in plain.terms)
    assert torch.equal(AVISMCriterion(K, num_points=None, cross_frame_weight=0.0)(out, clips).total, plain.total)


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_embeddings_alike_in_every_frame_cost_what_the_video_masks_cost(clips, weight):
    """With one embedding for both frames, reading it on the other frame is reading it on its
    own: the terms are the video mask terms times the weight, and the rest is unchanged."""
    embed, features = random_inputs()
    embed = embed[..., :1, :].expand_as(embed).contiguous()
    out = output(embed, features)
    plain = AVISMCriterion(K, num_points=None)(out, clips)
    across = AVISMCriterion(K, num_points=None, cross_frame_weight=weight)(out, clips)
    for name, value in plain.terms.items():
        assert torch.equal(across.terms[name], value), name
    torch.testing.assert_close(across.terms["across_mask"], weight * plain.terms["video_mask"])
    torch.testing.assert_close(across.terms["across_dice"], weight * plain.terms["video_dice"])
    torch.testing.assert_close(
        across.total, plain.total + across.terms["across_mask"] + across.terms["across_dice"]
    )


def test_the_terms_equal_the_mask_losses_of_the_swapped_embeddings(clips):
    """Reading only the matched tracks equals reading every track and taking the matched ones,
    layer by layer (each layer with its own matches)."""
    embed, features = random_inputs()
    out = output(embed, features)
    criterion = AVISMCriterion(K, num_points=None, cross_frame_weight=1.0)
    result = criterion(out, clips)
    swapped = video_masks(embed.flip(-2), features, per_frame=True)  # T = 2: a roll is a flip
    items = [prepare_video_targets(c, K).as_match_target() for c in clips] * LF
    num_masks = float(sum(len(c.labels) for c in clips) * LF)
    want_bce = want_dice = torch.zeros(())
    for layer in range(LV):
        logits, masks = out.video.pred_logits[layer].flatten(0, 1), out.video.pred_masks[layer].flatten(0, 1)
        matches = criterion.matcher(logits, masks, items)
        bce, dice = criterion.mask_losses(swapped[layer].flatten(0, 1), items, matches, num_masks)
        want_bce, want_dice = want_bce + bce, want_dice + dice
    torch.testing.assert_close(result.terms["across_mask"], want_bce * criterion.weights.mask)
    torch.testing.assert_close(result.terms["across_dice"], want_dice * criterion.weights.dice)


def test_a_track_that_follows_its_look_alike_pays_only_across_frames(clips):
    """Features that carry each look-alike's identity in every frame (channel 0: instance 0,
    channel 1: instance 1) and its place (channels 2-3 light the rows each twin is in). A track
    that finds its twin by identity has low terms both ways; one that finds it by place (the
    row it is in this frame) is as good on its own frame and pays across frames, where the
    other twin is in that row."""
    features = torch.zeros(B, T, CM, HM, WM)
    for t, (row_a, row_b) in enumerate([(0, 3), (3, 0)]):
        features[0, t, 0, row_a] = 1.0  # identity of instance 0
        features[0, t, 1, row_b] = 1.0  # identity of instance 1
        features[0, t, 4, 5] = 1.0  # the class-2 instance
    features[0, :, 2, 0] = 1.0  # place: row 0
    features[0, :, 3, 3] = 1.0  # place: row 3
    features[1, :, 5, 1] = 1.0  # clip 1: frame 0's place of its instance (row 1)
    features[1, 1, 5, 2] = 1.0
    features[:, :, :, :, :] = features * 24 - 12  # confident logits

    def embeds(by_place: bool) -> torch.Tensor:
        embed = torch.zeros(LV, LF, B, CQ, T, CM)
        for t in range(T):
            if by_place:  # frame 0: instance 0 in row 0 (channel 2); frame 1: in row 3 (channel 3)
                embed[:, :, 0, 0, t, 2 + t] = 1.0
                embed[:, :, 0, 1, t, 3 - t] = 1.0
            else:
                embed[:, :, 0, 0, t, 0] = 1.0
                embed[:, :, 0, 1, t, 1] = 1.0
        embed[:, :, 0, 2, :, 4] = 1.0
        embed[:, :, 1, 0, :, 5] = 1.0
        return embed

    criterion = AVISMCriterion(K, num_points=None, cross_frame_weight=1.0)
    by_identity = criterion(output(embeds(False), features), clips).terms
    by_place = criterion(output(embeds(True), features), clips).terms
    # clip 1's instance moves from row 1 to 2; its feature channel lights row 1 in both
    # frames and row 2 in frame 1 only, the same for both: only the twins differ
    assert torch.allclose(by_place["video_mask"], by_identity["video_mask"])
    assert torch.allclose(by_place["video_dice"], by_identity["video_dice"])
    assert by_place["across_mask"] > 2 * by_identity["across_mask"]
    assert by_place["across_dice"] > 2 * by_identity["across_dice"]


def test_frame_t_is_read_with_the_embedding_of_frame_t_minus_1(clips):
    """Embeddings of frame 1 all zero: frame 0 is read with them, so its features get no
    gradient from the terms, and frame 1's (read with frame 0's embeddings) do; the gradient
    reaches frame 0's embeddings and not frame 1's."""
    embed, features = random_inputs()
    embed[..., 1, :] = 0.0
    embed.requires_grad_(True)
    features.requires_grad_(True)
    result = AVISMCriterion(K, num_points=None, cross_frame_weight=1.0)(output(embed, features), clips)
    grads = torch.autograd.grad(
        result.terms["across_mask"] + result.terms["across_dice"], (embed, features)
    )
    d_embed, d_features = grads[0].abs(), grads[1].abs()
    assert float(d_features[:, 0].sum()) == 0.0 and float(d_features[:, 1].sum()) > 0
    assert float(d_embed[..., 0, :].sum()) > 0
    # only matched tracks: clip 1 has one instance, so one track per (layer, frame-query layer)
    assert int((d_embed[:, :, 1].sum(dim=(-1, -2)) > 0).sum(-1).max()) == 1


def test_single_frame_clips_have_no_cross_frame_terms():
    single = [
        ClipTargets(
            labels=torch.tensor([0]),
            track_ids=torch.tensor([1]),
            masks=torch.ones(1, 1, HM, WM, dtype=torch.bool),
            valid=torch.ones(1, 1, dtype=torch.bool),
        )
    ] * B
    embed, features = random_inputs()
    embed, features = embed[..., :1, :], features[:, :1]
    gen = torch.Generator().manual_seed(0)
    out = AVISMOutput(
        frame=FrameOutput(
            torch.randn(DL, B, FQ, K + 1, generator=gen),
            torch.randn(DL, B, FQ, HM, WM, generator=gen),
            torch.randn(LF, B, FQ, CM, generator=gen),
        ),
        video=VideoOutput(
            torch.randn(LV, LF, B, CQ, K + 1, generator=gen),
            embed,
            video_masks(embed, features, per_frame=True),
            torch.randn(LF, B, 1, FQ, CM, generator=gen),
            torch.randn(LV, LF, B, CQ, CM, generator=gen),
            mask_features=features,
        ),
    )
    terms = AVISMCriterion(K, num_points=None, cross_frame_weight=1.0)(out, single).terms
    assert not any(name.startswith("across") for name in terms)


def test_refusals(clips):
    embed, features = random_inputs()
    track_level = output(embed, features)
    track_level.video.pred_mask_embed = embed[..., 0, :]  # one embedding per track
    with pytest.raises(ValueError, match="per_frame_mask_embed"):
        AVISMCriterion(K, num_points=None, cross_frame_weight=1.0)(track_level, clips)
    no_features = output(embed, features)
    no_features.video.mask_features = None
    with pytest.raises(ValueError, match="per_frame_mask_embed"):
        AVISMCriterion(K, num_points=None, cross_frame_weight=1.0)(no_features, clips)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="cross_frame_weight"):
            AVISMCriterion(K, cross_frame_weight=bad)
    cfg = TrainConfig()
    assert build_criterion(cfg, K).cross_frame_weight == 0.0
    cfg.loss.cross_frame_weight = 0.5
    assert build_criterion(cfg, K).cross_frame_weight == 0.5
    cfg.validate()
    cfg.model = {"peak_prior": True, "per_frame_mask_embed": True}
    with pytest.raises(DataError, match="peak_prior"):
        cfg.validate()
    cfg.model, cfg.loss.cross_frame_weight = {}, -1.0
    with pytest.raises(DataError, match="cross_frame_weight"):
        cfg.validate()


def test_the_models_training_output_carries_the_features_its_masks_read():
    model = build_avism(
        get_preset("avism_tiny", num_classes=K, test_short_side=64, per_frame_mask_embed=True)
    ).train()
    torch.manual_seed(0)
    frames, audio = torch.rand(1, T, 3, 64, 64) * 255, torch.randn(1, T, 128)
    out = model(frames, audio, [(64, 64)])
    features = out.video.mask_features
    assert features is not None and features.shape[:2] == (1, T)
    torch.testing.assert_close(
        video_masks(out.video.pred_mask_embed, features, per_frame=True), out.video.pred_masks
    )
    clips_ = [clip([(0, 3)], [1])]
    clips_[0].masks = torch.nn.functional.interpolate(
        clips_[0].masks.float(), size=(64, 64)
    ).bool()  # full-resolution targets, as the data pipeline gives them
    result = AVISMCriterion(K, num_points=None, cross_frame_weight=0.5)(out, clips_)
    result.total.backward()
    assert torch.isfinite(result.total.detach()) and float(result.terms["across_mask"].detach()) > 0
