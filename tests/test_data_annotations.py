"""AVISeg annotation records: JSON round trip, validation messages, mask decoding."""

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from avis.data import (
    annotations_to_json,
    decode_segmentation,
    encode_mask,
    parse_annotations,
    read_annotations,
    write_annotations,
)
from avis.errors import DataError

H, W = 6, 8


def square(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def sample_json():
    """Two videos, three tracks: polygon, RLE and null segmentations."""
    rle = encode_mask(np.pad(np.ones((2, 2), bool), ((1, 3), (4, 2))))
    return {
        "info": {"note": "hand made"},
        "videos": [
            {"id": 1, "file_names": ["vid_a/00000.jpg", "vid_a/00001.jpg", "vid_a/00002.jpg"], "length": 3, "height": H, "width": W},
            {"id": 2, "file_names": ["vid_b/0.jpg", "vid_b/1.jpg"], "length": 2, "height": H, "width": W},
        ],
        "annotations": [
            {"id": 7, "video_id": 1, "category_id": 2, "iscrowd": 0, "height": H, "width": W,
             "segmentations": [[square(1, 1, 4, 4)], None, rle], "bboxes": [[1, 1, 3, 3], None, [4, 1, 2, 2]], "areas": [9, None, 4]},
            {"id": 8, "video_id": 1, "category_id": 1, "iscrowd": 0, "height": H, "width": W,
             "segmentations": [None, None, [square(0, 0, 2, 2), square(6, 4, 8, 6)]], "bboxes": [None, None, [0, 0, 8, 6]], "areas": [None, None, 8]},
            {"id": 9, "video_id": 2, "category_id": 2, "iscrowd": 0, "height": H, "width": W,
             "segmentations": [None, [square(2, 2, 5, 3)]], "bboxes": [None, [2, 2, 3, 1]], "areas": [None, 3]},
        ],
        "categories": [{"id": 1, "name": "violin"}, {"id": 2, "name": "cello"}],
    }  # fmt: skip


def test_json_round_trip(tmp_path):
    obj = sample_json()
    ann = parse_annotations(obj, "a.json")
    assert annotations_to_json(ann) == json.loads(json.dumps(obj))  # identical content
    path = tmp_path / "train.json"
    write_annotations(path, ann)
    again = read_annotations(path)
    assert again == ann
    assert [v.name for v in again.videos] == ["vid_a", "vid_b"]
    assert again.tracks[0].valid.tolist() == [True, False, True]
    write_annotations(tmp_path / "b.json", again)
    assert (tmp_path / "b.json").read_bytes() == path.read_bytes()  # deterministic writer


def test_masks_decode_against_hand_made_pixels():
    ann = parse_annotations(sample_json(), "a.json")
    track = ann.tracks[0]
    expected = np.zeros((H, W), bool)
    expected[1:4, 1:4] = True  # polygon corners on pixel edges: pixels 1, 2, 3
    np.testing.assert_array_equal(track.mask(0), expected)
    assert not track.mask(1).any() and track.mask(1).shape == (H, W)
    rle_expected = np.zeros((H, W), bool)
    rle_expected[1:3, 4:6] = True
    np.testing.assert_array_equal(track.mask(2), rle_expected)
    two = ann.tracks[1].mask(2)  # union of two polygons
    union = np.zeros((H, W), bool)
    union[0:2, 0:2] = True
    union[4:6, 6:8] = True
    np.testing.assert_array_equal(two, union)


def test_uncompressed_rle_and_degenerate_polygons():
    mask = np.zeros((H, W), bool)
    mask[2:5, 3] = True
    flat = mask.T.ravel()  # column-major runs starting with zeros
    counts, value, run = [], False, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    np.testing.assert_array_equal(decode_segmentation({"size": [H, W], "counts": counts}, H, W), mask)
    # a 4-number "polygon" would be read as a box by pycocotools: it is dropped (no area)
    assert not decode_segmentation([[1, 1, 3, 3]], H, W).any()
    compressed = encode_mask(mask)
    assert isinstance(compressed["counts"], str)
    np.testing.assert_array_equal(decode_segmentation(compressed, H, W), mask)
    assert mask_utils.area(mask_utils.frPyObjects([square(1, 1, 4, 4)], H, W)[0]) == 9


def broken(edit):
    obj = sample_json()
    edit(obj)
    return obj


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda o: o["videos"][1].pop("height"), ["videos[1] (id 2)", "missing field 'height'"]),
        (lambda o: o["annotations"][1].pop("segmentations"), ["annotations[1] (id 8)", "missing field 'segmentations'"]),
        (lambda o: o["categories"][0].pop("name"), ["categories[0]", "'name'"]),
        (lambda o: o.pop("categories"), ["missing top-level field 'categories'"]),
        (lambda o: o["annotations"][2]["segmentations"].append(None), ["annotations[2] (id 9)", "'segmentations'", "(2)", "found 3"]),
        (lambda o: o["annotations"][1].update(segmentations=None), ["annotations[1] (id 8)", "'segmentations'", "found null"]),
        (lambda o: o["annotations"][0]["bboxes"].pop(), ["annotations[0] (id 7)", "'bboxes'", "found 2"]),
        (lambda o: o["annotations"][0]["areas"].pop(), ["annotations[0] (id 7)", "'areas'"]),
        (lambda o: o["videos"][0].update(length=4), ["videos[0] (id 1)", "'length' is 4", "3 entries"]),
        (lambda o: o["annotations"][1].update(video_id=99), ["annotations[1] (id 8)", "'video_id' 99"]),
        (lambda o: o["annotations"][2].update(category_id=26), ["annotations[2] (id 9)", "'category_id' 26"]),
        (lambda o: o["annotations"][0]["segmentations"][2].update(size=[H + 1, W]), ["annotations[0] (id 7)", "segmentations[2]", "[7, 8]", "[6, 8]"]),
        (lambda o: o["annotations"][0].update(height=H * 2), ["annotations[0] (id 7)", "'height'/'width'"]),
        (lambda o: o["annotations"][0]["segmentations"].__setitem__(1, "oops"), ["annotations[0] (id 7)", "segmentations[1]", "str"]),
        (lambda o: o["annotations"][0]["segmentations"].__setitem__(1, [[1, 2, 3]]), ["annotations[0] (id 7)", "segmentations[1]", "even"]),
        (lambda o: o["annotations"][0]["bboxes"].__setitem__(0, [1, 2]), ["annotations[0] (id 7)", "bboxes[0]"]),
        (lambda o: o["videos"][0]["file_names"].__setitem__(1, "../evil/1.jpg"), ["videos[0] (id 1) file_names[1]", "'..'"]),
        (lambda o: o["videos"][1]["file_names"].__setitem__(0, "/etc/0.jpg"), ["videos[1] (id 2) file_names[0]", "absolute"]),
        (lambda o: o["videos"][1]["file_names"].__setitem__(0, "C:/data/0.jpg"), ["videos[1] (id 2) file_names[0]", "absolute"]),
        (lambda o: o["videos"][1]["file_names"].__setitem__(0, "vid_a/x.jpg"), ["videos[1] (id 2)", "several video folders"]),
        (lambda o: o["videos"][1]["file_names"].__setitem__(0, "noslash.jpg"), ["videos[1] (id 2) file_names[0]", "<video>/<frame>.jpg"]),
        (lambda o: o["videos"][1].update(id=1), ["videos[1]", "'id' 1 is used twice"]),
        (lambda o: o["annotations"][1].update(id=7), ["annotations[1]", "'id' 7 is used twice"]),
        (lambda o: o["videos"][0].update(width="8"), ["videos[0] (id 1)", "'width' must be an integer"]),
    ],
)
def test_validation_errors_name_file_entry_and_field(edit, fragments):
    with pytest.raises(DataError) as info:
        parse_annotations(broken(edit), "data/train.json")
    message = str(info.value)
    assert message.startswith("data/train.json")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_read_annotations_reports_bad_json(tmp_path):
    path = tmp_path / "val.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="val.json: not valid JSON"):
        read_annotations(path)
    with pytest.raises(DataError, match="not found"):
        read_annotations(tmp_path / "missing.json")


def test_parse_does_not_mutate_input():
    obj = sample_json()
    before = copy.deepcopy(obj)
    parse_annotations(obj)
    assert obj == before
