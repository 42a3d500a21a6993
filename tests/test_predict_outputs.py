"""Results records, track summaries and the timeline picture (no model involved)."""

import json

import numpy as np
import pytest

from avis.errors import DataError
from avis.inference.results import (
    decode_rle,
    encode_mask,
    read_results,
    sort_records,
    video_records,
    write_results,
)
from avis.inference.summary import (
    masks_to_sounding,
    sounding_intervals,
    summarize_tracks,
    summary_table,
    write_summary,
)
from avis.inference.timeline import (
    AXIS_HEIGHT,
    LABEL_WIDTH,
    MARGIN,
    SILENT_CELL,
    draw_timeline,
    instance_color,
)


def _random_masks(rng, n=3, t=5, h=12, w=17):
    return rng.random((n, t, h, w)) > 0.6


def test_rle_round_trip_and_json_ready():
    rng = np.random.default_rng(0)
    mask = rng.random((9, 14)) > 0.5
    rle = encode_mask(mask)
    assert rle["size"] == [9, 14] and isinstance(rle["counts"], str)
    json.dumps(rle)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_array_equal(decode_rle(encode_mask(np.zeros((4, 5), bool))), np.zeros((4, 5)))


def test_video_records_fields_and_masks():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng)
    records = video_records(7, [0.9, 0.5, 0.1], [0, 4, 2], masks)
    assert [r["category_id"] for r in records] == [1, 5, 3]
    assert all(r["video_id"] == 7 for r in records)
    for record, track in zip(records, masks):
        assert len(record["segmentations"]) == track.shape[0]
        for rle, frame in zip(record["segmentations"], track):
            np.testing.assert_array_equal(decode_rle(rle), frame)
    with pytest.raises(ValueError, match="video 7"):
        video_records(7, [0.9], [0, 1], masks)


def test_write_results_sorted_and_readable(tmp_path):
    rng = np.random.default_rng(2)
    recs_b = video_records(5, [0.8, 0.7], [1, 1], _random_masks(rng, n=2))
    recs_a = video_records(2, [0.6], [0], _random_masks(rng, n=1))
    path = write_results(recs_b + recs_a, tmp_path / "out" / "results.json")
    loaded = read_results(path)
    assert [r["video_id"] for r in loaded] == [2, 5, 5]
    assert [r["score"] for r in loaded] == [0.6, 0.8, 0.7]  # stable inside a video
    assert sort_records(recs_a + recs_b) == loaded
    (tmp_path / "bad.json").write_text(json.dumps([{"video_id": 1}]))
    with pytest.raises(DataError, match="bad.json.*record 0.*score"):
        read_results(tmp_path / "bad.json")


def test_sounding_intervals():
    assert sounding_intervals([0, 1, 1, 0, 1], fps=1) == [(1.0, 3.0), (4.0, 5.0)]
    assert sounding_intervals([1, 1], fps=2) == [(0.0, 1.0)]
    assert sounding_intervals([0, 0, 0], fps=1) == []


def test_summary_and_table(tmp_path):
    masks = np.zeros((2, 4, 3, 3), bool)
    masks[0, 1:3, 1, 1] = True
    masks[1, 3, 0, 0] = True
    sounding = masks_to_sounding(masks)
    summaries = summarize_tracks([0.9, 0.4], [1, 0], sounding, ["a", "b"], fps=1.0)
    assert [s.class_name for s in summaries] == ["b", "a"]
    assert summaries[0].sounding_frames == [1, 2] and summaries[0].intervals == [(1.0, 3.0)]
    assert summaries[1].sounding_seconds == 1.0
    path = write_summary(summaries, tmp_path / "s.json", video="v.mp4", fps=1.0, num_frames=4)
    payload = json.loads(path.read_text())
    assert payload["num_frames"] == 4 and payload["tracks"][0]["intervals"] == [[1.0, 3.0]]
    assert summary_table(summaries, "t").row_count == 2


def test_timeline_colours_sounding_cells():
    masks = np.zeros((2, 6, 2, 2), bool)
    masks[0, [0, 1, 4]] = True
    masks[1, 5] = True
    summaries = summarize_tracks([0.9, 0.8], [0, 1], masks_to_sounding(masks), ["x", "y"], 1.0)
    image = draw_timeline(summaries, num_frames=6, fps=1.0)
    pixels = np.asarray(image)
    cell = (image.width - 2 * MARGIN - LABEL_WIDTH) // 6
    x0, y0 = MARGIN + LABEL_WIDTH, MARGIN + AXIS_HEIGHT
    for row, summary in enumerate(summaries):
        y = y0 + row * (22 + 4) + 10
        for t in range(6):
            colour = tuple(pixels[y, x0 + t * cell + cell // 2])
            expected = instance_color(row) if t in summary.sounding_frames else SILENT_CELL
            assert colour == expected, (row, t)
    empty = draw_timeline([], num_frames=3, fps=1.0, title="nothing")
    assert empty.width > LABEL_WIDTH
