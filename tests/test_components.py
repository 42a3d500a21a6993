"""Component splitting of predicted tracks (avis.inference.components)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from avis.errors import CheckpointError
from avis.inference import shipped
from avis.inference.components import SplitOptions, num_parts, split_components, split_track
from avis.inference.prediction import Prediction
from avis.inference.results import decode_rle, encode_mask
from avis.models.avism import build_avism
from avis.models.checkpoint import save_model
from avis.models.config import avism_tiny

H, W = 40, 64


def _square(y, x, side=8):
    mask = np.zeros((H, W), dtype=bool)
    mask[max(y, 0) : y + side, max(x, 0) : x + side] = True
    return mask


def _rles(masks):
    return [encode_mask(m) for m in masks]


def _decoded(track):
    return np.stack([decode_rle(r) for r in track])


def _twins(num_frames=6):
    """Two squares moving right, one above the other: (left-top twin, bottom twin) per frame."""
    top = [_square(4, 4 + 5 * t) for t in range(num_frames)]
    bottom = [_square(26, 40 - 4 * t) for t in range(num_frames)]
    return np.stack(top), np.stack(bottom)


def test_two_separate_instances_become_two_tracks():
    top, bottom = _twins()
    parts = split_track(_rles(top | bottom))
    assert len(parts) == 2
    got = sorted((_decoded(p) for p in parts), key=lambda m: np.argwhere(m[0])[:, 0].mean())
    # each part follows one instance through every frame, although they cross in x
    np.testing.assert_array_equal(got[0], top)
    np.testing.assert_array_equal(got[1], bottom)


def test_a_single_blob_with_a_speck_is_kept_as_is():
    masks = np.stack([_square(10, 5 + 4 * t, side=12) for t in range(5)])
    masks[2, 35, 60] = True  # a one-pixel speck: smaller than 0.2 x the blob
    track = _rles(masks)
    (kept,) = split_track(track)
    assert kept == track  # the very same RLEs


def test_parts_partition_the_mask_when_instances_touch_and_appear_late():
    top, bottom = _twins(8)
    union = top | bottom
    union[:2] = top[:2]  # the second instance only enters at frame 2 (backward pass from there)
    union[5] = _square(10, 20, side=16)  # frame 5: the two touch, one merged blob
    union[6, 38, 0] = True  # a speck
    parts = [_decoded(p) for p in split_track(_rles(union))]
    assert len(parts) == 2
    total = parts[0].astype(int) + parts[1].astype(int)
    np.testing.assert_array_equal(total, union.astype(int))  # every pixel in exactly one part
    for t in (0, 1, 5):  # one blob: it goes to one part, the other is empty
        assert sorted([p[t].any() for p in parts]) == [False, True]
    first_top = next(p for p in parts if p[2].any() and np.argwhere(p[2])[:, 0].mean() < 20)
    np.testing.assert_array_equal(first_top[:2], top[:2])  # early frames: the nearest part


def test_num_parts_counts_non_empty_frames_only():
    assert num_parts([0, 0, 1, 1, 1, 1, 1, 2], 0.25) == 1  # 1 of 6 non-empty frames
    assert num_parts([0, 0, 0, 0, 1, 1, 1, 2], 0.25) == 2  # 1 of 4
    assert num_parts([1, 2, 2, 3], 0.25) == 3
    assert num_parts([1, 2, 2, 3], 0.5) == 2
    assert num_parts([0, 0], 0.25) == 1


def test_rare_second_blob_does_not_split():
    top, bottom = _twins(8)
    union = top.copy()
    union[3] |= bottom[3]  # 1 frame of 8 with a second blob: under the 25 % share
    assert len(split_track(_rles(union))) == 1
    assert len(split_track(_rles(union), SplitOptions(min_frame_share=0.1))) == 2


@pytest.mark.parametrize("kwargs", [{"min_blob_fraction": 0.0}, {"min_frame_share": 1.5}])
def test_options_are_checked(kwargs):
    with pytest.raises(ValueError):
        SplitOptions(**kwargs)


def test_prediction_keeps_order_scores_and_labels():
    top, bottom = _twins()
    single = np.stack([_square(12, 30, side=10)] * 6)
    prediction = Prediction(
        source="x", fps=1.0, num_frames=6, image_size=(H, W),
        scores=np.array([0.9, 0.8], np.float32), labels=np.array([3, 1]),
        class_names=[f"c{i}" for i in range(4)], audio_features="precomputed",
        rles=[_rles(top | bottom), _rles(single)],
    )  # fmt: skip
    out = split_components(prediction)
    np.testing.assert_array_equal(out.scores, np.float32([0.9, 0.9, 0.8]))
    np.testing.assert_array_equal(out.labels, [3, 3, 1])
    assert out.rles[2] == prediction.rles[1]
    np.testing.assert_array_equal(out.masks()[:2].sum(0), (top | bottom).astype(int))


def test_predictor_applies_the_model_setting(tmp_path, monkeypatch):
    from avis.inference import components, predictor

    torch.manual_seed(0)
    cfg = replace(
        avism_tiny(), test_short_side=32, test_max_size=64, split_components=True,
        split_min_blob_fraction=0.3, split_min_frame_share=0.4,
    )  # fmt: skip
    path = tmp_path / "m.pth"
    save_model(path, build_avism(cfg), cfg, class_names=[f"c{i}" for i in range(cfg.num_classes)])
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    audio = rng.normal(size=(3, cfg.audio_dim)).astype(np.float32)
    plain = predictor.VideoPredictor.from_checkpoint(path, threshold=0.0, split_components=False)
    split = predictor.VideoPredictor.from_checkpoint(path, threshold=0.0)  # stored setting: on
    assert plain.split is None and split.split == SplitOptions(0.3, 0.4)
    unsplit = plain.predict((frames, audio))
    expected = components.split_components(unsplit, SplitOptions(0.3, 0.4))
    calls = []

    def recording(prediction, options):  # a random model's masks are single blobs: record
        calls.append((prediction, options))
        return expected

    monkeypatch.setattr(components, "split_components", recording)
    assert plain.predict((frames, audio)).rles == unsplit.rles and not calls
    got = split.predict((frames, audio))
    ((given, options),) = calls
    assert options == SplitOptions(0.3, 0.4) and given.rles == unsplit.rles
    assert got is expected


def test_ship_checkpoint_sets_inference_settings_only(tmp_path):
    cfg = replace(avism_tiny(), num_classes=2)
    src = tmp_path / "trained.pth"
    save_model(src, build_avism(cfg), cfg, class_names=["a", "b"])
    dst = shipped.ship_checkpoint(src, tmp_path / "s.pth", inference={"split_components": True})
    stored = torch.load(dst, weights_only=True)["config"]
    assert stored["split_components"] is True and stored["num_classes"] == 2
    with pytest.raises(CheckpointError, match="not inference settings"):
        shipped.ship_checkpoint(src, tmp_path / "t.pth", inference={"num_classes": 3})
