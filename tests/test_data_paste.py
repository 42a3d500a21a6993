"""Twin paste (avis.data.paste): a pasted copy of a sounding instance as a new same-class track."""

import numpy as np
import pytest
import torch

from avis.data import ClipDataset, ClipSampler, ClipTransform, load_split
from avis.data.paste import TwinPaste
from avis.data.synth import SynthConfig, generate_dataset
from avis.engine.build import build_train_dataset
from avis.engine.config import tiny_recipe
from avis.errors import DataError


def _clip(t: int = 3, h: int = 64, w: int = 96):
    """Instance 0: a textured 10x14 box present in every frame; instance 1: a box missing in
    frame 1 (never copied); frames random noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, t, h, w), bool)
    for k in range(t):
        masks[0, k, 5 + k : 15 + k, 8 + 2 * k : 22 + 2 * k] = True
        if k != 1:
            masks[1, k, 40:50, 60:70] = True
    return frames, masks


@pytest.mark.parametrize("seed", range(8))
def test_the_copy_is_the_original_moved_inside_the_frame(seed):
    frames, masks = _clip()
    times = np.array([3, 5, 9])
    paste = TwinPaste(prob=1.0)
    out_frames, out_masks, src = paste(frames, masks, times, np.random.default_rng(seed))
    assert src == 0  # the only instance present in every frame
    assert out_masks.shape == (3, 3, 64, 96) and out_frames.shape == frames.shape
    copy = out_masks[2]
    for k in range(3):
        area = masks[0, k].sum()
        assert copy[k].sum() == area  # fully inside the frame
        ys, xs = np.nonzero(masks[0, k])
        cy, cx = np.nonzero(copy[k])
        dy, dx = cy.min() - ys.min(), cx.min() - xs.min()  # one shift per frame
        np.testing.assert_array_equal(out_frames[k, ys + dy, xs + dx], frames[k, ys, xs])
        covered = masks[0, k] & copy[k]
        assert covered.sum() <= paste.max_overlap * area
        # the copy lies on top: covered pixels leave every other mask
        np.testing.assert_array_equal(out_masks[:2, k], masks[:, k] & ~copy[k])
    untouched = ~copy.any(0)
    np.testing.assert_array_equal(out_frames[:, untouched], frames[:, untouched])
    assert not np.shares_memory(out_frames, frames)


def test_off_or_nothing_to_copy_leaves_the_clip_alone():
    frames, masks = _clip()
    times = np.array([0, 1, 2])
    same = TwinPaste(prob=0.0)(frames, masks, times, np.random.default_rng(0))
    assert same[0] is frames and same[1] is masks and same[2] is None
    partial = masks[1:]  # present in frames 0 and 2 only
    out = TwinPaste(prob=1.0)(frames, partial, times, np.random.default_rng(0))
    assert out[1] is partial and out[2] is None
    full = np.ones((1, 3, 64, 96), bool)  # no room for a copy off the original
    out = TwinPaste(prob=1.0)(frames, full, times, np.random.default_rng(0))
    assert out[2] is None
    with pytest.raises(ValueError, match="probability"):
        TwinPaste(prob=1.5)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("paste") / "synth"
    config = SynthConfig(size=48, min_frames=6, max_frames=9)
    generate_dataset(root, seed=5, counts={"train": 4}, config=config, workers=1)
    return root


def test_training_clips_get_a_same_class_track(synth_root):
    split = load_split(synth_root, "train")
    make = lambda paste: ClipDataset(  # noqa: E731
        split,
        ClipSampler(num_frames=2, frame_range=3),
        ClipTransform(short_sides=(48,)),
        seed=1,
        paste=paste,
    )
    plain, pasted = make(None), make(TwinPaste(prob=1.0))
    grew = 0
    for i in range(8):
        a, b = plain[i], pasted[i]
        assert len(b.labels) >= len(a.labels)
        if len(b.labels) > len(a.labels):
            grew += 1
            new_id, new_label = b.track_ids[-1].item(), b.labels[-1].item()
            assert new_id not in a.track_ids.tolist()
            assert len(set(b.track_ids.tolist())) == len(b.track_ids)
            assert new_label in a.labels.tolist()  # a copy of one of the clip's instances
            assert b.valid[-1].all()  # sounding wherever the clip is
            assert not torch.equal(a.frames, b.frames)
    assert grew > 0


def test_the_training_config_switches_it_on(synth_root):
    cfg = tiny_recipe()
    cfg.data.root = str(synth_root)
    assert build_train_dataset(cfg)[0].paste is None
    cfg.data.twin_paste_prob = 0.5
    assert build_train_dataset(cfg)[0].paste == TwinPaste(prob=0.5)
    cfg.data.twin_paste_prob = 2.0
    with pytest.raises(DataError, match="twin_paste_prob"):
        build_train_dataset(cfg)
