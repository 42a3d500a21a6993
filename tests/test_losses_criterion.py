"""AVISMCriterion: targets, deep supervision, similarity loss, quirks, degenerate inputs."""

import math

import pytest
import torch

from avis.data.batch import ClipTargets
from avis.losses import AVISMCriterion, LossWeights, prepare_video_targets
from avis.losses.targets import empty_clip_targets
from avis.models.outputs import AVISMOutput, FrameOutput, VideoOutput

K, B, T, FQ, CQ, C = 3, 2, 3, 6, 5, 8
DL, LF, LV = 3, 2, 2
HM = WM = 4
STRIDE = 4
HP, WP = HM * STRIDE, WM * STRIDE
SCALE = 12.0  # logit magnitude of a confident prediction


def make_clip(
    num_instances: int, generator: torch.Generator, silent_frame: int | None = None
) -> ClipTargets:
    coarse = torch.zeros(num_instances, T, HM, WM, dtype=torch.bool)
    for n in range(num_instances):
        coarse[n, :, n % HM, :] = True  # instance n covers row n of the stride-4 grid
        coarse[n, :, :, (n + 1) % WM] |= torch.rand(T, HM, generator=generator) > 0.5
    valid = torch.ones(num_instances, T, dtype=torch.bool)
    if num_instances > 1:
        valid[1, 0] = False  # instance 1 is silent in the first frame
    if silent_frame is not None:
        valid[:, silent_frame] = False
    masks = (
        coarse.repeat_interleave(STRIDE, -1).repeat_interleave(STRIDE, -2) & valid[:, :, None, None]
    )
    return ClipTargets(
        labels=torch.randint(0, K, (num_instances,), generator=generator),
        track_ids=torch.arange(num_instances) + 100,
        masks=masks,
        valid=valid,
    )


def random_output(generator: torch.Generator) -> AVISMOutput:
    def r(*shape):
        return torch.randn(*shape, generator=generator)

    return AVISMOutput(
        frame=FrameOutput(
            pred_logits=r(DL, B * T, FQ, K + 1),
            pred_masks=r(DL, B * T, FQ, HM, WM) * 3,
            frame_queries=r(LF, B * T, FQ, C),
        ),
        video=VideoOutput(
            pred_logits=r(LV, LF, B, CQ, K + 1),
            pred_mask_embed=r(LV, LF, B, CQ, C),
            pred_masks=r(LV, LF, B, CQ, T, HM, WM) * 3,
            pred_fq_embed=r(LF, B, T, FQ, C),
            pred_cq_embed=r(LV, LF, B, CQ, C),
        ),
    )


def perfect_output(clips: list[ClipTargets]) -> AVISMOutput:
    """Predictions that reproduce the targets exactly (query j <-> instance j)."""
    out = random_output(torch.Generator().manual_seed(0))
    f_logits = torch.full_like(out.frame.pred_logits, -SCALE)
    f_logits[..., K] = SCALE
    f_masks = torch.full_like(out.frame.pred_masks, -SCALE)
    v_logits = torch.full_like(out.video.pred_logits, -SCALE)
    v_logits[..., K] = SCALE
    v_masks = torch.full_like(out.video.pred_masks, -SCALE)
    fq = torch.zeros_like(out.video.pred_fq_embed)
    cq = torch.zeros_like(out.video.pred_cq_embed)
    for b, clip in enumerate(clips):
        video = prepare_video_targets(clip, K)
        coarse = video.masks[:, :, ::STRIDE, ::STRIDE].float() * 2 * SCALE - SCALE  # (N, T, Hm, Wm)
        for n in range(len(video.labels)):
            v_logits[:, :, b, n] = -SCALE
            v_logits[:, :, b, n, video.labels[n]] = SCALE
            v_masks[:, :, b, n] = coarse[n]
            cq[:, :, b, n, n] = SCALE
            for t in range(T):
                if video.present[n, t]:
                    f_logits[:, b * T + t, n] = -SCALE
                    f_logits[:, b * T + t, n, video.labels[n]] = SCALE
                    f_masks[:, b * T + t, n] = coarse[n, t]
                    fq[:, b, t, n, n] = SCALE
    return AVISMOutput(
        frame=FrameOutput(f_logits, f_masks, out.frame.frame_queries),
        video=VideoOutput(v_logits, out.video.pred_mask_embed, v_masks, fq, cq),
    )


def blend(a: AVISMOutput, b: AVISMOutput, alpha: float) -> AVISMOutput:
    def mix(x, y):
        return None if x is None else (1 - alpha) * x + alpha * y  # None: an option that is off

    return AVISMOutput(
        frame=FrameOutput(
            *(mix(x, y) for x, y in zip(vars(a.frame).values(), vars(b.frame).values()))
        ),
        video=VideoOutput(
            *(mix(x, y) for x, y in zip(vars(a.video).values(), vars(b.video).values()))
        ),
    )


def outputs_requiring_grad(out: AVISMOutput) -> AVISMOutput:
    for part in (out.frame, out.video):
        for name, value in vars(part).items():
            if value is not None:  # None: an optional output that is off (pred_quality)
                setattr(part, name, value.clone().requires_grad_(True))
    return out


@pytest.fixture
def clips():
    gen = torch.Generator().manual_seed(7)
    return [make_clip(3, gen), make_clip(2, gen, silent_frame=2)]


def test_losses_decrease_towards_the_targets(clips):
    criterion = AVISMCriterion(K, num_points=None)
    start, goal = random_output(torch.Generator().manual_seed(1)), perfect_output(clips)
    results = [criterion(blend(start, goal, a), clips) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for name in ("frame_ce", "frame_mask", "frame_dice", "video_ce", "video_mask", "video_dice"):
        values = [float(r.terms[name]) for r in results]
        assert all(x > y for x, y in zip(values, values[1:])), (name, values)
    assert float(results[-1].terms["sim"]) < float(results[0].terms["sim"])
    assert float(results[-1].total) < 0.05 * float(results[0].total)


def test_perfect_prediction_has_near_zero_mask_losses(clips):
    result = AVISMCriterion(K, num_points=None)(perfect_output(clips), clips)
    for name in ("frame_mask", "frame_dice", "video_mask", "video_dice"):
        assert float(result.terms[name]) < 1e-3, name


@pytest.mark.parametrize("num_points", [None, 50])
def test_no_nan_with_empty_and_silent_clips(num_points):
    gen = torch.Generator().manual_seed(2)
    all_silent = make_clip(2, gen)
    all_silent.valid[:] = False
    all_silent.masks[:] = False
    clips = [empty_clip_targets(T, HP, WP), all_silent]
    out = outputs_requiring_grad(random_output(gen))
    result = AVISMCriterion(K, num_points=num_points)(out, clips)
    assert torch.isfinite(result.total)
    result.total.backward()
    for part in (out.frame, out.video):
        for name in ("pred_logits", "pred_masks"):
            grad = getattr(part, name).grad
            assert grad is not None and torch.isfinite(grad).all(), name
    assert float(result.terms["sim"].detach()) == 0.0


def test_gradients_reach_every_loss_input(clips):
    torch.manual_seed(0)
    out = outputs_requiring_grad(random_output(torch.Generator().manual_seed(3)))
    result = AVISMCriterion(K, num_points=40)(out, clips)
    result.total.backward()
    for part, names in (
        (out.frame, ("pred_logits", "pred_masks")),
        (out.video, ("pred_logits", "pred_masks", "pred_fq_embed", "pred_cq_embed")),
    ):
        for name in names:
            grad = getattr(part, name).grad
            assert grad is not None and grad.abs().sum() > 0, name


def test_deep_supervision_covers_every_layer(clips):
    criterion = AVISMCriterion(K, num_points=None)
    out = random_output(torch.Generator().manual_seed(4))
    base = criterion(out, clips)
    out.frame.pred_masks[0] += 5.0  # only the initial-query prediction changes
    out.video.pred_logits[0] += torch.randn(
        out.video.pred_logits[0].shape
    )  # only the first video layer
    changed = criterion(out, clips)
    assert float(changed.terms["frame_mask"]) != pytest.approx(float(base.terms["frame_mask"]))
    assert float(changed.terms["video_ce"]) != pytest.approx(float(base.terms["video_ce"]))


def test_frame_targets_skip_silent_frames_video_targets_keep_instances(clips):
    video = prepare_video_targets(clips[0], K)
    assert len(video.labels) == 3
    assert not video.present[1, 0] and video.present[1, 1]
    assert len(video.frame_target(0).labels) == 2
    assert not video.masks[1, 0].any()
    silent = prepare_video_targets(clips[1], K)
    assert len(silent.frame_target(2).labels) == 0


def test_official_quirks(clips):
    video = prepare_video_targets(clips[0], K, official_quirks=True)
    assert int(video.labels[1]) == K  # absent from the first frame -> no-object class
    assert int(video.labels[0]) == int(clips[0].labels[0])
    fixed = AVISMCriterion(K, weights=LossWeights(sim=0.5))
    quirky = AVISMCriterion(K, weights=LossWeights(sim=0.5), official_quirks=True)
    assert fixed.term_weight("sim") == 0.5 and quirky.term_weight("sim") == 1.0


def test_empty_clip_gives_pure_no_object_ce():
    clips = [empty_clip_targets(T, HP, WP)] * B
    out = random_output(torch.Generator().manual_seed(5))
    out.frame.pred_logits[:] = 0.0
    out.video.pred_logits[:] = 0.0
    result = AVISMCriterion(K, num_points=None)(out, clips)
    expected = 2.0 * math.log(K + 1)  # uniform logits, class weight 2, every query -> no-object
    assert float(result.terms["frame_ce"]) == pytest.approx(DL * expected, rel=1e-5)
    assert float(result.terms["video_ce"]) == pytest.approx(LV * expected, rel=1e-5)


def test_frame_no_object_weight_changes_only_the_frame_level_ce(clips):
    out = random_output(torch.Generator().manual_seed(3))
    default = AVISMCriterion(K, num_points=None, no_object_weight=0.5)(out, clips).terms
    same = AVISMCriterion(K, num_points=None, no_object_weight=0.5, frame_no_object_weight=None)
    assert all(torch.equal(v, same(out, clips).terms[k]) for k, v in default.items())
    split = AVISMCriterion(K, num_points=None, no_object_weight=0.5, frame_no_object_weight=0.1)
    low = AVISMCriterion(K, num_points=None, no_object_weight=0.1)(out, clips).terms
    terms = split(out, clips).terms
    # the frame level's CE is the one of a criterion with 0.1 everywhere, the rest is 0.5's
    assert torch.allclose(terms["frame_ce"], low["frame_ce"])
    assert not torch.allclose(terms["frame_ce"], default["frame_ce"])
    for name in ("video_ce", "video_mask", "video_dice", "frame_mask", "frame_dice", "sim"):
        assert torch.equal(terms[name], default[name]), name


@pytest.mark.parametrize("weight", [0.0, -0.5])
def test_no_object_weights_must_be_positive(weight):
    with pytest.raises(ValueError, match="no-object weight"):
        AVISMCriterion(K, no_object_weight=weight)
    with pytest.raises(ValueError, match="no-object weight"):
        AVISMCriterion(K, frame_no_object_weight=weight)
