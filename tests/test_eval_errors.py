"""Bad input gets a DataError that names the file, the entry and the field; edge inputs work."""

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from avis.errors import DataError
from avis.eval import evaluate
from avis.eval.rle import checked_areas
from avis.eval.synthetic import SyntheticSpec, make_case


@pytest.fixture(scope="module")
def case():
    spec = SyntheticSpec(num_videos=2, frames=(4, 6), gt_tracks=(2, 3), preds_per_gt=(1, 1))
    return make_case(np.random.default_rng(7), spec)


def _raises(gt, preds, *fragments):
    with pytest.raises(DataError) as info:
        evaluate(gt, preds)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    return str(info.value)


def test_unknown_video_id(case):
    gt, preds = copy.deepcopy(case)
    preds[1]["video_id"] = 999
    _raises(gt, preds, "prediction #1", "unknown video id 999")


def test_wrong_number_of_frames(case):
    gt, preds = copy.deepcopy(case)
    preds[0]["segmentations"].pop()
    _raises(gt, preds, "prediction #0", "segmentations", "one RLE per frame")


def test_rle_size_differs_from_video(case):
    gt, preds = copy.deepcopy(case)
    preds[2]["segmentations"][1] = {"size": [10, 10], "counts": "PPTl0"}
    _raises(gt, preds, "prediction #2", "segmentations[1]", "RLE size [10, 10]")


def test_unknown_category(case):
    gt, preds = copy.deepcopy(case)
    preds[0]["category_id"] = 27
    _raises(gt, preds, "prediction #0", "unknown category id 27")


@pytest.mark.parametrize(
    "counts, why",
    [
        ("0\x01", "character outside"),
        ("0P", "cut off"),  # the last run length continues past the end
        ("00", "add up to 0 pixels"),
        ("Q0", "negative run length"),  # 0x21: run 0 = 1, then 0: ... built below
        ("a" * 65536, "cut off"),  # issue 18: only continuation characters (was an IndexError)
        ("P" * 70000, "cut off"),  # longer than one batch of strings
        ("0" + "a" * 300, "cut off"),
    ],
)
def test_malformed_rle(case, counts, why):
    gt, preds = copy.deepcopy(case)
    if why == "negative run length":  # runs [0, 10, ..] with run 2 = -5: sums can still match
        h, w = gt["videos"][0]["height"], gt["videos"][0]["width"]
        counts = _encode_runs([0, h * w + 5, -5])
    video_id = preds[0]["video_id"]
    size = [v for v in gt["videos"] if v["id"] == video_id][0]
    preds[0]["segmentations"][2] = {"size": [size["height"], size["width"]], "counts": counts}
    _raises(gt, preds, "prediction #0", "segmentations[2]", why)


def _encode_runs(runs: list[int]) -> str:
    """pycocotools' string code for a run list (allows invalid, negative runs)."""
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_run_decoder_matches_pycocotools():
    rng = np.random.default_rng(0)
    counts, pixels = [], []
    for _ in range(200):
        h, w = rng.integers(1, 40, 2)
        mask = np.asfortranarray((rng.random((h, w)) < rng.random()).astype(np.uint8))
        counts.append(mask_utils.encode(mask)["counts"].decode())
        pixels.append(int(h * w))
    assert _encode_runs([3, 4, 5, 6]) == mask_utils.frPyObjects(
        {"size": [18, 1], "counts": [3, 4, 5, 6]}, 18, 1)["counts"].decode()
    rles = [{"size": [1, n], "counts": c} for c, n in zip(counts, pixels)]
    want = np.concatenate([mask_utils.area(rles[i : i + 100]) for i in range(0, len(rles), 100)])
    assert (checked_areas(counts, pixels, str) == want).all()  # all valid; areas decoded
    pixels[123] += 1
    with pytest.raises(DataError, match="^#123: "):
        checked_areas(counts, pixels, lambda i: f"#{i}")


def test_duplicate_video_ids(case):
    gt, preds = copy.deepcopy(case)
    gt["videos"][1]["id"] = gt["videos"][0]["id"]
    _raises(gt, preds, "videos[1]", "duplicate video id")


def test_gt_errors_name_the_annotation(case):
    gt, preds = copy.deepcopy(case)
    gt["annotations"][1]["segmentations"] = gt["annotations"][1]["segmentations"][:-1]
    _raises(gt, preds, "annotations[1]", "segmentations")
    gt, preds = copy.deepcopy(case)
    gt["annotations"][0]["video_id"] = 42
    _raises(gt, preds, "annotations[0]", "unknown video id 42")
    gt, preds = copy.deepcopy(case)
    t = next(i for i, s in enumerate(gt["annotations"][0]["segmentations"]) if s)
    gt["annotations"][0]["segmentations"][t] = [[1, 2, 3]]
    _raises(gt, preds, "annotations[0]", f"segmentations[{t}]", "polygon")
    gt["annotations"][0]["segmentations"][t] = [["a", 1, 2, 3, 4, 5]]
    _raises(gt, preds, "annotations[0]", f"segmentations[{t}]", "numbers")


def test_missing_files_and_bad_json(tmp_path, case):
    gt, preds = case
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match="not found"):
        evaluate(tmp_path / "gt.json", tmp_path / "missing.json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        evaluate(tmp_path / "gt.json", tmp_path / "bad.json")


def test_empty_prediction_list_is_valid(case):
    gt, _ = case
    for protocol in ("official", "fixed"):
        m = evaluate(gt, [], protocol=protocol).metrics
        assert m["AP_all"] == 0.0 and m["AR_all"] == 0.0
        assert m["HOTA"] == m["DetA"] == m["AssA"] == 0.0
        assert m["FAs"] in (0.0, None) and m["FAm"] in (0.0, None)
        assert m["FAn"] in (100.0, None)  # a silent frame without predictions is correct


def test_gt_rle_and_uncompressed_predictions_accepted(case):
    """GT given as RLE (the official reader needs polygons) and predictions with uncompressed
    counts give the same numbers as polygons and compressed strings."""
    gt, preds = copy.deepcopy(case)
    want = evaluate(gt, preds).metrics
    h, w = gt["videos"][0]["height"], gt["videos"][0]["width"]
    for ann in gt["annotations"]:
        for t, seg in enumerate(ann["segmentations"]):
            if seg:
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                ann["segmentations"][t] = {"size": rle["size"], "counts": rle["counts"].decode()}
    for seg_list in (p["segmentations"] for p in preds[:2]):
        for t, seg in enumerate(seg_list):
            seg_list[t] = {"size": [h, w], "counts": _uncompressed_counts(mask_utils.decode(seg))}
    assert evaluate(gt, preds).metrics == want


def _uncompressed_counts(binary: np.ndarray) -> list[int]:
    """Column-major run lengths of a binary mask, starting with a (possibly empty) 0-run."""
    flat = binary.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.r_[0, edges, flat.size]).tolist()
    return [0, *counts] if flat[0] else counts


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e9, 1e12])
def test_polygon_coordinates_that_would_crash_pycocotools(case, value):
    """Issue 18 barrage: pycocotools segfaults or exhausts memory on these (JSON allows NaN)."""
    gt, preds = copy.deepcopy(case)
    track = gt["annotations"][0]
    h, w = gt["videos"][0]["height"], gt["videos"][0]["width"]
    track["segmentations"][1] = [[1.0, 1.0, value, 2.0, 3.0, 5.0]]
    _raises(gt, preds, "annotations[0]", "segmentations[1]", "polygon 0")
    from avis.data.masks import decode_segmentation

    with pytest.raises(ValueError, match="polygon 0"):
        decode_segmentation([[1.0, 1.0, value, 2.0, 3.0, 5.0]], h, w)


def test_frame_sides_beyond_pycocotools_counts(case):
    gt, preds = copy.deepcopy(case)
    gt["videos"][0]["height"] = 10**9
    _raises(gt, preds, "videos[0]", "height and width must be 1..16384")


@pytest.mark.parametrize("name", ["\x1b]0;retitled\x07\x1b[2J", "a\nb", "del\x7f", "c1\x9b31m"])
def test_control_characters_in_category_names_are_refused(case, tmp_path, name):
    """Third barrage: a GT category name with an escape sequence reached the terminal raw in
    `eval --per-class` (rich keeps ESC); names are checked where GT / split JSON is parsed."""
    from avis.data.annotations import parse_annotations

    gt, preds = copy.deepcopy(case)
    gt["categories"][0]["name"] = name
    with pytest.raises(DataError, match=r"categories\[0\]: category name .* holds a control character"):
        evaluate(gt, preds)
    split = {"videos": [], "annotations": [], "categories": [{"id": 1, "name": name}]}
    with pytest.raises(DataError, match=r"categories\[0\]: category name .* holds a control character"):
        parse_annotations(split, "split.json")
