"""Properties of the fixed protocol, on small scenes drawn by hypothesis.

Scenes: 1-2 videos of 1-5 frames (40x64 px); each GT track is a rectangle in its own horizontal
band (tracks never overlap) and sounds on some frames. The rightmost strip of the image holds
no GT, so a prediction there is a false positive far from every object.
"""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from avis.categories import AVISEG_CLASSES, categories_json
from avis.eval import evaluate

H, W = 40, 64
FP_STRIP = 12  # columns W-FP_STRIP..W-1 never hold GT
NUM_CLASSES = 3
SCORES = (0.2, 0.5, 0.9)  # few values, so that ties happen
HEADLINE = ("FA", "HOTA", "AP_all")
MONOTONE = ("FA", "FAn", "FAs", "FAm", "HOTA", "DetA", "AssA", "AP_all", "AR_all")
SLACK = 1e-9  # float noise allowed in "never raises"

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def rect_rle(x0: int, y0: int, x1: int, y1: int) -> dict:
    """RLE of pixels x0..x1-1, y0..y1-1 (clipped to the image; may be empty)."""
    mask = np.zeros((H, W), dtype=np.uint8, order="F")
    mask[max(y0, 0) : max(min(y1, H), 0), max(x0, 0) : max(min(x1, W), 0)] = 1
    rle = mask_utils.encode(mask)
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


@st.composite
def scenes(draw):
    videos = []
    for v in range(draw(st.integers(1, 2))):
        num_frames = draw(st.integers(1, 5))
        num_tracks = draw(st.integers(1, 3))
        band = H // num_tracks
        tracks = []
        for i in range(num_tracks):
            x0 = draw(st.integers(0, W - FP_STRIP - 2))
            x1 = draw(st.integers(x0 + 1, W - FP_STRIP))
            y0 = i * band + draw(st.integers(0, band - 2))
            y1 = draw(st.integers(y0 + 1, (i + 1) * band))
            present = draw(st.lists(st.booleans(), min_size=num_frames, max_size=num_frames))
            tracks.append({
                "rect": (x0, y0, x1, y1), "present": present,
                "category": draw(st.integers(1, NUM_CLASSES)),
            })  # fmt: skip
        videos.append({"name": f"v{v}", "frames": num_frames, "tracks": tracks})
    return videos


def gt_json(scene) -> dict:
    videos, anns = [], []
    for v, video in enumerate(scene):
        T = video["frames"]
        videos.append({"id": v + 1, "height": H, "width": W,
                       "file_names": [f"{video['name']}/{t:05d}.jpg" for t in range(T)]})
        for track in video["tracks"]:
            x0, y0, x1, y1 = track["rect"]
            poly = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            anns.append({
                "id": len(anns) + 1, "video_id": v + 1, "category_id": track["category"],
                "iscrowd": 0, "segmentations": [poly if p else None for p in track["present"]],
                "areas": [(x1 - x0) * (y1 - y0) if p else None for p in track["present"]],
            })  # fmt: skip
    return {"videos": videos, "annotations": anns, "categories": categories_json(AVISEG_CLASSES)}


def pred(video_id: int, category: int, score: float, rect, present) -> dict:
    empty = rect_rle(0, 0, 0, 0)
    return {"video_id": video_id, "score": score, "category_id": category,
            "segmentations": [rect_rle(*rect) if p else dict(empty) for p in present]}


def perfect_predictions(scene, scores) -> list[list[dict]]:
    """Per GT track (in annotation order), its one exact prediction."""
    out, k = [], 0
    for v, video in enumerate(scene):
        for track in video["tracks"]:
            out.append([pred(v + 1, track["category"], scores[k % len(scores)], track["rect"],
                             track["present"])])
            k += 1
    return out


@st.composite
def noisy_predictions(draw, scene) -> list[dict]:
    preds = []
    for v, video in enumerate(scene):
        T = video["frames"]
        for track in video["tracks"]:
            for _ in range(draw(st.integers(0, 2))):
                x0, y0, x1, y1 = track["rect"]
                dx, dy = draw(st.integers(-3, 3)), draw(st.integers(-3, 3))
                category = track["category"] if draw(st.booleans()) else draw(st.integers(1, NUM_CLASSES))
                present = draw(st.lists(st.booleans(), min_size=T, max_size=T))
                preds.append(pred(v + 1, category, draw(st.sampled_from(SCORES)),
                                  (x0 + dx, y0 + dy, x1 + dx, y1 + dy), present))
        for _ in range(draw(st.integers(0, 1))):
            preds.append(draw(far_false_positive(v + 1, T)))
    return preds


@st.composite
def far_false_positive(draw, video_id: int, num_frames: int) -> dict:
    x0 = draw(st.integers(W - FP_STRIP, W - 1))
    y0 = draw(st.integers(0, H - 1))
    rect = (x0, y0, draw(st.integers(x0 + 1, W)), draw(st.integers(y0 + 1, H)))
    present = draw(st.lists(st.booleans(), min_size=num_frames, max_size=num_frames))
    return pred(video_id, draw(st.integers(1, NUM_CLASSES + 2)), draw(st.sampled_from(SCORES)),
                rect, present)


def fixed(gt, preds) -> dict:
    return evaluate(gt, preds, protocol="fixed").unrounded


def assert_not_raised(before: dict, after: dict) -> None:
    for key in MONOTONE:
        if before[key] is None:  # undefined before (e.g. no GT and no prediction at all)
            continue
        assert after[key] is not None, key
        assert after[key] <= before[key] + SLACK, (key, before[key], after[key])


@PROPERTY_SETTINGS
@given(scene=scenes(), scores=st.lists(st.sampled_from(SCORES), min_size=1, max_size=4))
def test_perfect_prediction_scores_100(scene, scores):
    gt = gt_json(scene)
    preds = [p for per_track in perfect_predictions(scene, scores) for p in per_track]
    result = evaluate(gt, preds, protocol="fixed")
    for key in HEADLINE:
        if key == "FA" or any(any(t["present"]) for v in scene for t in v["tracks"]):
            assert result.metrics[key] == 100.0, (key, result.metrics)


@PROPERTY_SETTINGS
@given(data=st.data(), scene=scenes())
def test_permuting_predictions_changes_nothing(data, scene):
    gt = gt_json(scene)
    preds = data.draw(noisy_predictions(scene))
    order = data.draw(st.permutations(range(len(preds))))
    before, after = fixed(gt, preds), fixed(gt, [preds[i] for i in order])
    for key, value in before.items():
        same = (value is None and after[key] is None) or value == after[key]
        assert same or (math.isnan(value) and math.isnan(after[key])), key


@PROPERTY_SETTINGS
@given(data=st.data(), scene=scenes())
def test_far_false_positive_never_raises_a_score(data, scene):
    gt = gt_json(scene)
    preds = data.draw(noisy_predictions(scene))
    v = data.draw(st.integers(0, len(scene) - 1))
    extra = data.draw(far_false_positive(v + 1, scene[v]["frames"]))
    assert_not_raised(fixed(gt, preds), fixed(gt, [*preds, extra]))


@PROPERTY_SETTINGS
@given(data=st.data(), scene=scenes())
def test_dropping_a_tracks_predictions_never_raises_a_score(data, scene):
    gt = gt_json(scene)
    scores = data.draw(st.lists(st.sampled_from(SCORES), min_size=1, max_size=4))
    per_track = perfect_predictions(scene, scores)
    fps = [data.draw(far_false_positive(v + 1, video["frames"]))
           for v, video in enumerate(scene) if data.draw(st.booleans())]
    drop = data.draw(st.integers(0, len(per_track) - 1))
    kept = [p for i, preds in enumerate(per_track) if i != drop for p in preds]
    everything = [p for preds in per_track for p in preds]
    assert_not_raised(fixed(gt, everything + fps), fixed(gt, kept + fps))
