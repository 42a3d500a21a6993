"""Clip sampling, clip-consistent transforms (frames and masks stay aligned), collation."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from avis.data import ClipDataset, ClipSampler, ClipTransform, collate_clips, load_split
from avis.data.dataset import ClipSample
from avis.data.synth import SynthConfig, generate_dataset
from avis.data.transforms import apply_clip_transform, resized_size


@pytest.mark.parametrize("length", [1, 2, 4, 7, 30, 100])
@pytest.mark.parametrize("replace", [False, True])
def test_sampler_invariants(length, replace):
    sampler = ClipSampler(num_frames=5, frame_range=6, replace=replace)
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sampler(length, rng)
        assert idx.shape == (5,) and idx.dtype == np.int64
        assert (np.diff(idx) >= 0).all() and idx.min() >= 0 and idx.max() < length
        assert idx.max() - idx.min() <= 2 * 6
        if not replace and length >= 7:  # the window around any frame holds >= 4 others
            assert len(set(idx.tolist())) == 5


def test_sampler_is_deterministic_and_covers_the_video():
    sampler = ClipSampler(num_frames=3, frame_range=2)
    a = [sampler(40, np.random.default_rng(s)).tolist() for s in range(200)]
    b = [sampler(40, np.random.default_rng(s)).tolist() for s in range(200)]
    assert a == b
    seen = {t for clip in a for t in clip}
    assert seen == set(range(40))


def painted_clip(rng, t=4, h=60, w=80, n=3):
    """Frames whose red channel is 255 exactly on instance 0's mask; masks of moving boxes."""
    masks = np.zeros((n, t, h, w), bool)
    for i in range(n):
        for k in range(t):
            y, x = rng.integers(0, h - 20), rng.integers(0, w - 25)
            masks[i, k, y : y + 12 + 2 * i, x : x + 15 + i] = True
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 0] = masks[0] * 255
    frames[..., 1] = masks[1] * 255
    return frames, masks


@pytest.mark.parametrize("seed", range(6))
def test_transform_keeps_frames_and_masks_aligned(seed):
    rng = np.random.default_rng(seed)
    frames, masks = painted_clip(rng)
    transform = ClipTransform(short_sides=(32, 48, 96), max_size=150, flip_prob=0.5, crop_prob=0.7, crop_scale=(0.6, 0.9))
    out_frames, out_masks = transform(frames, masks, np.array([0, 3, 4, 9]), rng)
    t, _, h, w = out_frames.shape
    assert out_frames.dtype == torch.float32 and out_masks.dtype == torch.bool
    assert out_masks.shape == (3, t, h, w)
    assert min(h, w) in (32, 48, 96) or max(h, w) == 150
    for channel, inst in ((0, 0), (1, 1)):
        bright = out_frames[:, channel].numpy() > 127
        mask = out_masks[inst].numpy()
        for k in range(t):  # away from mask borders frames and masks agree exactly
            inner = ndimage.binary_erosion(mask[k], iterations=2)
            outer = ~ndimage.binary_dilation(mask[k], iterations=2)
            assert bright[k][inner].all() and not bright[k][outer].any()


def test_misaligned_flip_would_be_caught():
    rng = np.random.default_rng(0)
    frames, masks = painted_clip(rng)
    params = ClipTransform(short_sides=(60,), flip_prob=1.0).sample(60, 80, np.arange(4), rng)
    f, m = apply_clip_transform(frames, masks, params)
    assert params.flip and torch.equal(f[:, 0] > 127, m[0])  # same size: exact agreement
    assert not torch.equal(f.flip(-1)[:, 0] > 127, m[0])


def test_crop_moves_smoothly_with_a_fixed_size():
    transform = ClipTransform(short_sides=(64,), crop_prob=1.0, crop_scale=(0.5, 0.5), crop_drift=0.3)
    times = np.array([0, 2, 3, 7, 8, 11])
    for seed in range(20):
        p = transform.sample(100, 120, times, np.random.default_rng(seed))
        assert p.crop_size == (50, 60)
        off = p.crop_offsets.astype(float)
        assert (off >= 0).all() and (off[:, 0] <= 50).all() and (off[:, 1] <= 60).all()
        # linear in time: offset / time slope is constant up to rounding
        expected = off[0] + (off[-1] - off[0]) * ((times - times[0]) / (times[-1] - times[0]))[:, None]
        assert np.abs(off - expected).max() <= 1.0
        assert np.abs(off[-1] - off[0]).max() <= 0.3 * 120 + 1


def test_resize_rule():
    assert resized_size(720, 1280, 360, 1333) == (360, 640)
    assert resized_size(100, 1000, 360, 1333) == (133, 1333)  # capped by max_size
    assert resized_size(128, 128, 96, 1333) == (96, 96)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    generate_dataset(root, seed=5, counts={"train": 4}, config=SynthConfig(size=48, min_frames=6, max_frames=9), workers=1)
    return load_split(root, "train")


def test_clip_dataset_and_collate_batch_of_three(split):
    ds = ClipDataset(split, ClipSampler(num_frames=3, frame_range=4), ClipTransform(short_sides=(40, 48, 56), flip_prob=0.5, crop_prob=0.5), seed=3)
    samples = [ds[i] for i in range(6)]
    batch = collate_clips(samples[:3])
    b, t, c, hp, wp = batch.frames.shape
    assert (b, t, c) == (3, 3, 3) and hp % 32 == 0 and wp % 32 == 0
    assert batch.audio.shape == (3, 3, 128) and batch.frame_indices.shape == (3, 3)
    for k, (s, (h, w), tgt) in enumerate(zip(samples, batch.image_sizes, batch.targets)):
        assert (h, w) == tuple(s.frames.shape[-2:])
        assert torch.equal(batch.frames[k, :, :, :h, :w], s.frames)
        assert not batch.frames[k, :, :, h:, :].any() and not batch.frames[k, :, :, :, w:].any()
        n = len(tgt.labels)
        assert tgt.masks.shape == (n, 3, hp, wp) and tgt.valid.shape == (n, 3)
        assert not tgt.masks[:, :, h:, :].any() and not tgt.masks[:, :, :, w:].any()
        assert torch.equal(tgt.masks.flatten(2).any(-1), tgt.valid)  # empty mask <=> not valid
        assert tgt.valid.any(1).all()  # default: tracks with no valid frame are dropped
        assert ((tgt.labels >= 0) & (tgt.labels < split.num_classes)).all()
        video = split.video(batch.video_ids[k])
        ids = {tr.id for tr in split.tracks[video.id]}
        assert set(tgt.track_ids.tolist()) <= ids
        np.testing.assert_array_equal(batch.audio[k].numpy(), split.load_audio(video)[batch.frame_indices[k].numpy()])
    moved = batch.to("cpu")
    assert moved.frames.shape == batch.frames.shape


def test_clip_dataset_is_deterministic_per_seed_index_epoch(split):
    make = lambda seed: ClipDataset(split, ClipSampler(num_frames=3), ClipTransform(short_sides=(32, 48), flip_prob=0.5, crop_prob=0.5), seed=seed)  # noqa: E731
    a, b = make(0).sample(5, epoch=2), make(0).sample(5, epoch=2)
    for field in ("frames", "audio", "labels", "track_ids", "masks", "valid", "frame_indices"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    others = [make(0).sample(5, epoch=e) for e in range(6)] + [make(1).sample(5, epoch=2)]
    assert any(not torch.equal(o.frame_indices, a.frame_indices) or o.frames.shape != a.frames.shape or not torch.equal(o.frames, a.frames) for o in others)


def test_keep_empty_tracks_and_clips_without_sound(split):
    ds = ClipDataset(split, ClipSampler(num_frames=1, frame_range=0), ClipTransform(short_sides=(48,)), seed=0, keep_empty_tracks=True)
    samples = [ds.sample(i, 0) for i in range(40)]
    for s in samples:
        video = s.video_id
        assert len(s.labels) == len(split.tracks[video])  # every track kept
    assert any(not s.valid.any(1).all() for s in samples)  # some rows are all-invalid
    batch = collate_clips(samples[:4])
    assert all(t.valid.shape[1] == 1 for t in batch.targets)


def test_collate_handles_a_clip_with_no_instances():
    empty = ClipSample(
        frames=torch.rand(2, 3, 40, 50) * 255, audio=torch.zeros(2, 128), labels=torch.zeros(0, dtype=torch.int64),
        track_ids=torch.zeros(0, dtype=torch.int64), masks=torch.zeros(0, 2, 40, 50, dtype=torch.bool),
        valid=torch.zeros(0, 2, dtype=torch.bool), video_id=1, frame_indices=torch.tensor([0, 1]),
    )  # fmt: skip
    batch = collate_clips([empty, empty])
    assert batch.frames.shape == (2, 2, 3, 64, 64)
    assert batch.targets[0].masks.shape == (0, 2, 64, 64) and batch.targets[0].valid.shape == (0, 2)
