"""Partial occlusion (avis.data.occlude): part of one instance painted over with background."""

import numpy as np
import pytest
import torch

from avis.data import ClipDataset, ClipSampler, ClipTransform, load_split
from avis.data.occlude import PartialOcclusion, _band
from avis.engine.build import build_final_stage_dataset, build_train_dataset
from avis.engine.config import tiny_recipe
from test_data_paste import _clip  # instance 0 in every frame, instance 1 missing in frame 1


@pytest.mark.parametrize("seed", range(12))
def test_a_band_of_one_instance_is_painted_with_background(seed):
    frames, masks = _clip()
    occlude = PartialOcclusion(prob=1.0)
    out_frames, out_masks, target = occlude(frames, masks, np.random.default_rng(seed))
    assert target in (0, 1)
    assert out_frames.shape == frames.shape and out_masks.shape == masks.shape
    assert not np.shares_memory(out_frames, frames) and not np.shares_memory(out_masks, masks)
    changed = (out_frames != frames).any(-1)  # (T, H, W)
    lost = masks & ~out_masks  # (N, T, H, W)
    assert not (out_masks & ~masks).any()  # masks only lose pixels
    assert lost.any() and lost[target].any()
    occupied = masks.any(0)
    for k in range(3):
        if not lost[:, k].any():
            np.testing.assert_array_equal(out_frames[k], frames[k])
            continue
        assert masks[target, k].any()  # only frames where the instance is visible
        assert out_masks[target, k].any()  # it always keeps part of itself
        ys, xs = np.nonzero(lost[:, k].any(0))
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        # the painted band: a rectangle inside the instance's box, every instance loses it
        assert not out_masks[:, k, y0:y1, x0:x1].any()
        assert not changed[k, :y0].any() and not changed[k, y1:].any()
        assert not changed[k, :, :x0].any() and not changed[k, :, x1:].any()
        by, bx = np.nonzero(masks[target, k])
        assert by.min() <= y0 and y1 <= by.max() + 1 and bx.min() <= x0 and x1 <= bx.max() + 1
        # its pixels are a same-size patch of that frame with no instance in it
        patch = out_frames[k, y0:y1, x0:x1]
        found = [
            (sy, sx)
            for sy in range(64 - (y1 - y0) + 1)
            for sx in range(96 - (x1 - x0) + 1)
            if not occupied[k, sy : sy + y1 - y0, sx : sx + x1 - x0].any()
            and np.array_equal(frames[k, sy : sy + y1 - y0, sx : sx + x1 - x0], patch)
        ]  # fmt: skip
        assert found


def test_bands_cover_their_share_from_one_side():
    mask = np.zeros((40, 50), bool)
    mask[10:30, 5:45] = True  # 20 high, 40 wide
    assert _band(mask, 0, 0.25) == (10, 15, 5, 45)
    assert _band(mask, 1, 0.5) == (20, 30, 5, 45)
    assert _band(mask, 2, 0.25) == (10, 30, 5, 15)
    assert _band(mask, 3, 0.6) == (10, 30, 21, 45)
    assert _band(mask, 3, 0.999) == (10, 30, 6, 45)  # never the whole box
    thin = np.zeros((40, 50), bool)
    thin[10, 5:45] = True  # one pixel high: nothing to take from the top
    y0, y1, _, _ = _band(thin, 0, 0.5)
    assert y0 == y1


def test_off_nothing_visible_or_no_background_leaves_the_clip_alone():
    frames, masks = _clip()
    same = PartialOcclusion(prob=0.0)(frames, masks, np.random.default_rng(0))
    assert same[0] is frames and same[1] is masks and same[2] is None
    empty = np.zeros_like(masks)
    out = PartialOcclusion(prob=1.0)(frames, empty, np.random.default_rng(0))
    assert out[1] is empty and out[2] is None
    full = np.ones((1, 3, 64, 96), bool)  # no background anywhere
    out = PartialOcclusion(prob=1.0)(frames, full, np.random.default_rng(0))
    assert out[2] is None
    np.testing.assert_array_equal(out[0], frames)
    np.testing.assert_array_equal(out[1], full)
    for bad in (
        {"prob": 1.5},
        {"min_cover": 0.0},
        {"min_cover": 0.7, "max_cover": 0.5},
        {"max_cover": 1.0},
    ):
        with pytest.raises(ValueError, match="occlusion"):
            PartialOcclusion(**bad)


def test_training_clips_lose_pixels_and_keep_their_other_draws(synth_root):
    split = load_split(synth_root, "train")
    make = lambda occlude: ClipDataset(  # noqa: E731
        split,
        ClipSampler(num_frames=2, frame_range=3),
        ClipTransform(short_sides=(32,), flip_prob=0.5),
        seed=1,
        occlude=occlude,
    )
    plain, occluded = make(None), make(PartialOcclusion(prob=1.0))
    hidden = 0
    for i in range(8):
        a, b = plain[i], occluded[i]
        # same clip times, flips and tracks: the occluder draws from its own generator
        assert torch.equal(a.frame_indices, b.frame_indices) and torch.equal(a.audio, b.audio)
        assert b.track_ids.tolist() == [
            t for t in a.track_ids.tolist() if t in b.track_ids.tolist()
        ]
        for n, track in enumerate(b.track_ids.tolist()):
            m = a.track_ids.tolist().index(track)
            assert b.masks[n].sum() <= a.masks[m].sum()
        if b.masks.sum() < a.masks.sum():
            hidden += 1
            assert not torch.equal(a.frames, b.frames)
    assert hidden > 0


def test_the_training_config_switches_it_on(synth_root):
    cfg = tiny_recipe()
    cfg.data.root = str(synth_root)
    assert build_train_dataset(cfg)[0].occlude is None
    cfg.data.occlude_prob = 0.5
    dataset = build_train_dataset(cfg)[0]
    assert dataset.occlude == PartialOcclusion(prob=0.5)
    assert build_final_stage_dataset(cfg, dataset).occlude == dataset.occlude
