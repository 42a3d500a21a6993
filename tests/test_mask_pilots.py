"""The mask-pilot option: training-only pilot queries of the frame decoder and their loss.

Letters: N frames, G pilots per frame, fQ learned frame queries, Hm x Wm mask grid, K classes.
"""

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from avis.engine.build import build_criterion
from avis.engine.config import TrainConfig
from avis.losses import AVISMCriterion
from avis.losses.matcher import MatchTarget
from avis.losses.pilots import jitter_mask, make_pilot_queries, shift_mask
from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.frame_decoder import FrameDecoder, PilotQueries

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, small_clips  # noqa: E402

K = 5


# ---------------------------------------------------------------------- pilot making
def test_shift_mask_moves_and_fills_with_zeros():
    mask = torch.zeros(4, 5)
    mask[1, 1:3] = 1.0
    moved = shift_mask(mask, 2, -1)
    expected = torch.zeros(4, 5)
    expected[3, 0:2] = 1.0
    assert torch.equal(moved, expected)
    assert torch.equal(shift_mask(mask, 0, 0), mask)
    assert torch.equal(shift_mask(mask, 0, 5), torch.zeros(4, 5))  # moved off the grid
    expected = torch.zeros(4, 5)
    expected[0, 4] = 1.0  # row 1 -> 0, columns 1, 2 -> 4 and 5 (lost)
    assert torch.equal(shift_mask(mask, -1, 3), expected)


def test_jitter_stays_within_the_fraction_of_the_box():
    mask = torch.zeros(40, 40)
    mask[10:20, 5:25] = 1.0  # box 10 x 20
    gen = torch.Generator().manual_seed(0)
    offsets = set()
    for _ in range(50):
        moved = jitter_mask(mask, 0.2, gen)
        assert moved.sum() == mask.sum()  # far from the border: nothing lost
        rows, cols = moved.amax(1).nonzero(), moved.amax(0).nonzero()
        dy, dx = int(rows[0]) - 10, int(cols[0]) - 5
        assert abs(dy) <= 2 and abs(dx) <= 4  # 0.2 x 10, 0.2 x 20
        offsets.add((dy, dx))
    assert len(offsets) > 10  # really random
    assert torch.equal(jitter_mask(mask, 0.0, gen), mask)
    assert torch.equal(jitter_mask(torch.zeros(8, 8), 0.5, gen), torch.zeros(8, 8))


def _items() -> list[MatchTarget]:
    """Three frames with 2, 0 and 1 targets on a 16 x 16 input (4 x 4 grid)."""
    def target(labels, boxes):
        masks = torch.zeros(len(labels), 1, 16, 16, dtype=torch.bool)
        for j, (y0, y1, x0, x1) in enumerate(boxes):
            masks[j, 0, y0:y1, x0:x1] = True
        return MatchTarget(labels=torch.tensor(labels, dtype=torch.int64), masks=masks)

    return [
        target([3, 1], [(0, 8, 0, 8), (8, 16, 8, 16)]),
        target([], []),
        target([K], [(0, 16, 0, 4)]),  # the official quirk's class-less target
    ]


def test_one_pilot_per_target_in_target_order():
    pilots = make_pilot_queries(_items(), (4, 4), K, label_noise=0.0, max_shift=0.0)
    assert pilots is not None
    assert pilots.labels.shape == (3, 2) and pilots.masks.shape == (3, 2, 4, 4)
    assert pilots.valid.tolist() == [[True, True], [False, False], [False, False]]
    assert pilots.labels[0].tolist() == [3, 1]
    assert pilots.masks[0, 0, :2, :2].eq(1).all() and pilots.masks[0, 0].sum() == 4
    assert pilots.masks[0, 1, 2:, 2:].eq(1).all() and pilots.masks[0, 1].sum() == 4
    assert pilots.masks[1].sum() == 0
    assert int(pilots.labels.max()) < K  # a valid embedding index everywhere


def test_label_noise_draws_other_classes_and_no_targets_give_padding():
    gen = torch.Generator().manual_seed(0)
    items = [MatchTarget(torch.zeros(50, dtype=torch.int64), torch.ones(50, 1, 8, 8, dtype=torch.bool))]
    pilots = make_pilot_queries(items, (2, 2), K, label_noise=1.0, max_shift=0.0, generator=gen)
    assert pilots is not None and len(set(pilots.labels[0].tolist())) == K
    empty = [MatchTarget(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 1, 8, 8))] * 3
    padding = make_pilot_queries(empty, (2, 2), K)  # one padding slot per frame
    assert padding is not None and padding.labels.shape == (3, 1) and not padding.valid.any()
    assert make_pilot_queries([], (2, 2), K) is None
    with pytest.raises(ValueError):
        make_pilot_queries(items, (2, 2), K, label_noise=1.5)


# ---------------------------------------------------------------------- the decoder
def _decoder() -> FrameDecoder:
    torch.manual_seed(0)
    return FrameDecoder(
        in_channels=16, hidden_dim=16, num_queries=4, num_classes=K, nheads=2,
        dim_feedforward=32, dec_layers=3, mask_dim=16, audio_dim=8, mask_pilots=True,
    )  # fmt: skip


def _inputs(n: int = 2):
    torch.manual_seed(1)
    features = [torch.randn(n, 16, s, s) for s in (2, 4, 8)]
    return features, torch.randn(n, 16, 16, 16), torch.randn(n, 8)


def _pilots(n: int = 2) -> PilotQueries:
    masks = torch.zeros(n, 3, 16, 16)
    masks[:, 0, :8, :8] = 1.0
    masks[:, 1, 8:, 8:] = 1.0
    masks[:, 2, :8, :8] = 1.0  # pilot 2 = pilot 0 (same class below), pilot 1 elsewhere
    labels = torch.tensor([[2, 2, 2]] * n)
    valid = torch.tensor([[True, True, True], [True, True, False]])[:n]
    return PilotQueries(labels=labels, masks=masks, valid=valid)


def test_learned_queries_are_unchanged_by_pilots():
    decoder = _decoder().train()
    features, mask_features, audio = _inputs()
    plain = decoder(features, mask_features, audio, 2)
    piloted = decoder(features, mask_features, audio, 2, pilots=_pilots())
    assert plain.pilot_logits is None and plain.pilot_masks is None
    torch.testing.assert_close(piloted.pred_logits, plain.pred_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(piloted.pred_masks, plain.pred_masks, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(piloted.frame_queries, plain.frame_queries, rtol=1e-5, atol=1e-5)
    assert piloted.pilot_logits.shape == (4, 2, 3, K + 1)  # (Dl, N, G, K+1)
    assert piloted.pilot_masks.shape == (4, 2, 3, 16, 16)


def test_pilots_follow_their_masks_and_ignore_padding():
    decoder = _decoder().train()
    features, mask_features, audio = _inputs()
    out = decoder(features, mask_features, audio, 1, pilots=_pilots())
    logits, masks = out.pilot_logits[-1], out.pilot_masks[-1]
    # same class and mask: the same prediction; another mask: another prediction
    torch.testing.assert_close(logits[0, 0], logits[0, 2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masks[0, 0], masks[0, 2], rtol=1e-5, atol=1e-5)
    assert (masks[0, 0] - masks[0, 1]).abs().max() > 1e-3
    # frame 1's third pilot is padding: what it holds does not reach the others
    other = _pilots()
    other.labels[1, 2] = 4
    other.masks[1, 2] = 1.0
    changed = decoder(features, mask_features, audio, 1, pilots=other)
    torch.testing.assert_close(changed.pilot_masks[:, 1, :2], out.pilot_masks[:, 1, :2], rtol=1e-5, atol=1e-5)
    # and it does reach the valid pilots of frame 0 (a check that the test can fail)
    other.labels[0, 2] = 4
    changed = decoder(features, mask_features, audio, 1, pilots=other)
    assert (changed.pilot_masks[-1, 0, 0] - out.pilot_masks[-1, 0, 0]).abs().max() > 1e-6


def test_pilots_are_checked():
    decoder = _decoder()
    features, mask_features, audio = _inputs()
    bad = replace(_pilots(), masks=torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="pilots.masks"):
        decoder(features, mask_features, audio, 1, pilots=bad)
    with pytest.raises(ValueError, match="training"):
        decoder(features, mask_features, audio, 1, all_layer_masks=False, pilots=_pilots())
    plain = FrameDecoder(16, 16, 4, K, 2, 32, 3, 16, 8)
    with pytest.raises(ValueError, match="mask_pilots"):
        plain(features, mask_features, audio, 1, pilots=_pilots())


# ---------------------------------------------------------------------- model and loss
def _model(pilots: bool):
    torch.manual_seed(0)
    return build_avism(get_preset("avism_tiny", mask_pilots=pilots, **SMALL))


def _clips(model, b: int = 2):
    k = model.video_module.class_embed.out_features - 1
    return small_clips(k, b), k


def test_model_option_adds_one_table_and_a_trained_loss_term():
    plain, piloted = _model(False), _model(True)
    assert set(piloted.state_dict()) - set(plain.state_dict()) == {
        "frame_decoder.pilot_label_embed.weight"
    }
    assert set(plain.state_dict()) <= set(piloted.state_dict())
    assert piloted.mask_pilots and not plain.mask_pilots
    model = piloted.train()
    clips, k = _clips(model)
    t = clips[0].masks.shape[1]
    criterion = AVISMCriterion(k, num_points=None)
    pilots = criterion.pilot_queries(clips, (8, 8))
    assert pilots is not None and pilots.labels.shape[0] == 2 * t
    frames = torch.rand(2, t, 3, 32, 32) * 255
    audio = torch.randn(2, t, model.video_module.av_proj.in_features)
    out = model(frames, audio, [(32, 32)] * 2, pilots)
    result = criterion(out, clips)
    for name in ("pilot_ce", "pilot_mask", "pilot_dice"):
        assert float(result.terms[name].detach()) > 0
    (result.terms["pilot_ce"] + result.terms["pilot_mask"]).backward()
    grad = model.frame_decoder.pilot_label_embed.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    # without pilots (evaluation, or a model without the option) there are no pilot terms
    model.zero_grad()
    result = criterion(model(frames, audio, [(32, 32)] * 2), clips)
    assert not any(name.startswith("pilot") for name in result.terms)


def test_a_batch_without_targets_still_trains_every_parameter():
    """Under DDP every process must use the same parameters in every step (run r29 crashed
    with a gloo size mismatch when one process's clips had no sounding instance and it ran
    without pilots): a batch without targets still gets pilots (all padding), and every
    parameter, the pilot table included, gets a gradient."""
    from avis.losses.targets import empty_clip_targets

    model = _model(True).train()
    k = model.video_module.class_embed.out_features - 1
    t = 2
    clips = [empty_clip_targets(t, 32, 32), empty_clip_targets(t, 32, 32)]
    criterion = AVISMCriterion(k, num_points=None)
    pilots = criterion.pilot_queries(clips, (8, 8))
    assert pilots is not None and not pilots.valid.any()
    frames = torch.rand(2, t, 3, 32, 32) * 255
    audio = torch.randn(2, t, model.video_module.av_proj.in_features)
    criterion(model(frames, audio, [(32, 32)] * 2, pilots), clips).total.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_perfect_pilots_cost_nothing_and_padding_is_free():
    """The pilot loss of pilots that predict their targets exactly is ~0, and it does not
    depend on what padding slots predict."""
    model = _model(True).train()
    clips, k = _clips(model)
    criterion = AVISMCriterion(k, num_points=None)
    frames = torch.rand(2, clips[0].masks.shape[1], 3, 32, 32) * 255
    audio = torch.randn(2, frames.shape[1], model.video_module.av_proj.in_features)
    pilots = criterion.pilot_queries(clips, (8, 8))
    with torch.no_grad():
        out = model(frames, audio, [(32, 32)] * 2, pilots)
    from avis.losses.targets import frame_match_targets, prepare_video_targets

    items = frame_match_targets([prepare_video_targets(c, k) for c in clips], frames.shape[1])
    logits = torch.full_like(out.frame.pilot_logits, -30.0)
    masks = torch.full_like(out.frame.pilot_masks, -30.0)
    for i, item in enumerate(items):
        for j, (label, mask) in enumerate(zip(item.labels, item.masks)):
            logits[:, i, j, label] = 30.0
            grid = torch.nn.functional.interpolate(mask.float()[None], size=(8, 8))[0, 0] > 0.5
            masks[:, i, j] = torch.where(grid, 30.0, -30.0)
    perfect = replace(out, frame=replace(out.frame, pilot_logits=logits, pilot_masks=masks))
    terms = criterion(perfect, clips).terms
    for name in ("pilot_ce", "pilot_mask", "pilot_dice"):
        assert float(terms[name]) < 1e-4, name
    padded = [(i, j) for i, item in enumerate(items) for j in range(len(item.labels), logits.shape[2])]
    assert padded  # the batch has frames with fewer targets than others
    for i, j in padded:
        logits[:, i, j] = torch.randn(k + 1) * 10
        masks[:, i, j] = torch.randn(8, 8) * 10
    again = criterion(perfect, clips).terms
    for name in ("pilot_ce", "pilot_mask", "pilot_dice"):
        assert float(again[name]) == pytest.approx(float(terms[name]), abs=1e-6)
    wrong = replace(out, frame=replace(out.frame, pilot_logits=-logits, pilot_masks=-masks))
    assert float(criterion(wrong, clips).terms["pilot_mask"]) > 1.0


def test_loss_config_reaches_the_criterion():
    cfg = TrainConfig()
    cfg.loss.pilot_weight, cfg.loss.pilot_label_noise, cfg.loss.pilot_shift = 0.5, 0.1, 0.3
    criterion = build_criterion(cfg, 3)
    assert criterion.term_weight("pilot_mask") == 0.5 * cfg.loss.mask_weight
    assert criterion.term_weight("frame_mask") == cfg.loss.mask_weight
    assert (criterion.pilot_label_noise, criterion.pilot_shift) == (0.1, 0.3)


def test_the_trainer_hands_pilots_to_models_that_take_them(tmp_path):
    """A model with `mask_pilots` gets the criterion's pilots for the batch's B*T frames on
    the stride-4 grid; models without the option are called as before (the toy model's
    forward has no pilots argument)."""
    from avis.engine.distributed import DistInfo
    from test_engine_toys import ToyAVISM, toy_config, toy_trainer

    seen = []

    class PilotedToy(ToyAVISM):
        mask_pilots = True

        def forward(self, frames, audio, image_sizes, pilots=None):
            seen.append((tuple(frames.shape), pilots))
            return super().forward(frames, audio, image_sizes)

    cfg = toy_config(iterations=2, checkpoint_every=100)
    toy_trainer(cfg, tmp_path / "plain", DistInfo()).train()  # called without pilots
    toy_trainer(cfg, tmp_path / "piloted", DistInfo(), model_class=PilotedToy).train()
    assert len(seen) == 2
    for (b, t, _, hp, wp), pilots in seen:
        assert pilots is not None and pilots.masks.shape[0] == b * t
        assert tuple(pilots.masks.shape[-2:]) == (hp // 4, wp // 4)
