"""Loading a split from disk: file checks, audio features and their length policy, deep check."""

import json
import logging
import shutil

import numpy as np
import pytest

from avis.data import load_split, load_video
from avis.data.check import check_split
from avis.data.synth import SynthConfig, generate_dataset
from avis.errors import DataError

TINY = SynthConfig(size=48, min_frames=5, max_frames=8)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    generate_dataset(root, seed=1, counts={"train": 3}, config=TINY, workers=1)
    return root


@pytest.fixture
def root(pristine, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(pristine, copy)
    return copy


def first_video(root):
    obj = json.loads((root / "train.json").read_text())
    return obj, obj["videos"][0]


def test_load_split_reads_everything(root):
    split = load_split(root, "train")
    assert len(split.videos) == 3 and split.audio_dim == 128
    video = split.videos[0]
    sample = load_video(split, video)
    assert sample.frames.shape == (video.length, 48, 48, 3) and sample.frames.dtype == np.uint8
    assert sample.audio.shape == (video.length, 128) and sample.audio.dtype == np.float32
    assert split.label(split.categories[0].id) == 0
    assert check_split(root, "train").ok


def test_missing_frame_names_file_and_video(root):
    _, video = first_video(root)
    (root / "train" / "JPEGImages" / video["file_names"][2]).unlink()
    with pytest.raises(DataError) as info:
        load_split(root, "train")
    msg = str(info.value)
    assert video["file_names"][2] in msg and f"video {video['id']}" in msg and "file_names[2]" in msg


def test_wrong_frame_size_found_on_read(root):
    from PIL import Image

    _, video = first_video(root)
    Image.new("RGB", (40, 48)).save(root / "train" / "JPEGImages" / video["file_names"][1])
    split = load_split(root, "train")
    with pytest.raises(DataError, match="48x40, the annotation says 48x48"):
        split.load_frames(split.videos[0], [1])
    report = check_split(root, "train")
    assert not report.ok and any(video["file_names"][1] in e for e in report.errors)


@pytest.mark.parametrize("shape", [(7,), (3, 4, 128), (0, 128)])
def test_audio_features_must_be_t_by_d(root, shape):
    _, video = first_video(root)
    name = video["file_names"][0].split("/")[0]
    np.save(root / "train" / "FEATAudios" / f"{name}.npy", np.zeros(shape, np.float32))
    with pytest.raises(DataError) as info:
        load_split(root, "train")
    assert f"{name}.npy" in str(info.value) and "(T, D)" in str(info.value)


def _negative_size_header(path):
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 128), }"
    hdr = hdr.ljust(117) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + bytes(512))


def _npz_named_npy(path):
    with open(path, "wb") as handle:
        np.savez(handle, a=np.zeros((5, 128), np.float32))


@pytest.mark.parametrize(
    "write, why",
    [
        (lambda p: p.write_bytes(b""), "No data left in file"),  # was an EOFError
        (_negative_size_header, "memory mapped length must be positive"),  # was an OverflowError
        (_npz_named_npy, "a .npz archive"),  # was an AttributeError
        (lambda p: np.save(p, np.zeros((5, 128), object), allow_pickle=True), "Python objects"),
    ],
    ids=["empty", "negative-size", "npz", "pickled"],
)
def test_broken_feature_files_are_data_errors(root, write, why, capsys):
    """Third barrage: numpy's other exceptions for a broken .npy were internal errors."""
    from avis.cli.main import main

    _, video = first_video(root)
    name = video["file_names"][0].split("/")[0]
    write(root / "train" / "FEATAudios" / f"{name}.npy")
    with pytest.raises(DataError, match=rf"{name}\.npy: cannot read audio features of video {video['id']}.*{why}"):
        load_split(root, "train")
    assert main(["data", "check", "--root", str(root), "--split", "train"]) == 1
    out, err = capsys.readouterr()
    assert why in " ".join(out.split()) and "internal error" not in err


def test_an_integer_of_5000_digits_is_invalid_json(root, tmp_path, capsys):
    """Third barrage: Python refuses to convert integers of more than 4300 digits with a
    ValueError that is no JSONDecodeError: `eval` and `data check` said "internal error"."""
    from avis.cli.main import main

    text = (root / "train.json").read_text()
    (root / "train.json").write_text(text.replace('"id": 1', '"id": ' + "7" * 5000, 1).replace('"id":1', '"id":' + "7" * 5000, 1))
    with pytest.raises(DataError, match="train.json: not valid JSON .*4300 digits"):
        load_split(root, "train")
    (root / "train.json").write_text(text)
    pred = tmp_path / "pred.json"
    pred.write_text('[{"video_id": 1, "score": ' + "9" * 5000 + ', "category_id": 1, "segmentations": []}]')
    assert main(["eval", "--gt", str(root / "train.json"), "--pred", str(pred)]) == 1
    err = capsys.readouterr().err
    assert "pred.json: not valid JSON" in err and "internal error" not in err


def test_missing_audio_features(root):
    _, video = first_video(root)
    name = video["file_names"][0].split("/")[0]
    (root / "train" / "FEATAudios" / f"{name}.npy").unlink()
    with pytest.raises(DataError, match=f"{name}.npy: audio feature file of video {video['id']}"):
        load_split(root, "train")


def test_escaping_file_name_rejected_before_touching_disk(root):
    obj, _ = first_video(root)
    obj["videos"][1]["file_names"][0] = "../../outside/00000.jpg"
    (root / "train.json").write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"videos\[1\] .*'\.\.'"):
        load_split(root, "train")


def short_features(root, missing):
    obj, video = first_video(root)
    name = video["file_names"][0].split("/")[0]
    path = root / "train" / "FEATAudios" / f"{name}.npy"
    feats = np.load(path)
    np.save(path, feats[: len(feats) - missing] if missing > 0 else np.concatenate([feats, feats[:-missing]]))
    return video, feats


def test_audio_policy_pad_appends_zero_rows_and_logs(root, caplog):
    video, feats = short_features(root, missing=2)
    with caplog.at_level(logging.WARNING):
        split = load_split(root, "train", audio_policy="pad")
    assert any("padded with zero rows" in r.message and f"video {video['id']}" in r.message for r in caplog.records)
    audio = split.load_audio(split.video(video["id"]))
    assert audio.shape == (video["length"], 128)
    np.testing.assert_array_equal(audio[:-2], feats[:-2])
    assert not audio[-2:].any()


def test_audio_policy_pad_drops_extra_rows(root, caplog):
    video, feats = short_features(root, missing=-3)
    with caplog.at_level(logging.WARNING):
        split = load_split(root, "train", audio_policy="pad")
    assert any("dropped the extra rows" in r.message for r in caplog.records)
    np.testing.assert_array_equal(split.load_audio(split.video(video["id"])), feats)


def test_audio_policy_trim_cuts_the_video(root, caplog):
    video, _ = short_features(root, missing=2)
    with caplog.at_level(logging.WARNING):
        split = load_split(root, "train", audio_policy="trim")
    assert any("trimmed the video" in r.message for r in caplog.records)
    record = split.video(video["id"])
    assert record.length == video["length"] - 2
    assert all(len(t.segmentations) == record.length for t in split.tracks[record.id])
    assert load_video(split, record).frames.shape[0] == record.length


def test_audio_policy_error(root):
    video, _ = short_features(root, missing=1)
    with pytest.raises(DataError, match=f"video {video['id']}.* {video['length']} frames but {video['length'] - 1} audio feature rows"):
        load_split(root, "train", audio_policy="error")


def test_check_reports_wrong_areas_and_missing_wav(root):
    obj, video = first_video(root)
    track = next(a for a in obj["annotations"] if a["video_id"] == video["id"])
    t = next(i for i, s in enumerate(track["segmentations"]) if s is not None)
    track["areas"][t] = track["areas"][t] * 3 + 10
    (root / "train.json").write_text(json.dumps(obj))
    name = video["file_names"][0].split("/")[0]
    (root / "train" / "WAVAudios" / f"{name}.wav").unlink()
    report = check_split(root, "train")
    assert report.ok  # warnings only
    assert any(f"(id {track['id']})" in w and f"areas[{t}]" in w for w in report.warnings)
    assert any(f"{name}.wav" in w for w in report.warnings)


def test_check_collects_structural_error(root):
    obj, _ = first_video(root)
    obj["annotations"][0]["category_id"] = 99
    (root / "train.json").write_text(json.dumps(obj))
    report = check_split(root, "train")
    assert not report.ok and "'category_id' 99" in report.errors[0]


def test_check_reports_polygons_outside_the_frame(root):
    obj, video = first_video(root)
    track = next(a for a in obj["annotations"] if a["video_id"] == video["id"])
    t = next(i for i, s in enumerate(track["segmentations"]) if s is not None)
    track["segmentations"][t] = [[x * 3 for x in poly] for poly in track["segmentations"][t]]
    track["areas"][t] = track["bboxes"][t] = None
    (root / "train.json").write_text(json.dumps(obj))
    report = check_split(root, "train")
    assert any(f"(id {track['id']})" in w and f"segmentations[{t}]" in w and "outside" in w for w in report.warnings)


def test_clip_dataset_in_a_dataloader(root):
    from torch.utils.data import DataLoader

    from avis.data import ClipDataset, ClipSampler, ClipTransform, collate_clips

    ds = ClipDataset(load_split(root, "train"), ClipSampler(num_frames=2), ClipTransform(short_sides=(32,)), seed=0)
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_clips))
    assert [b.frames.shape[0] for b in batches] == [2, 1]
    assert batches[0].frames.shape[1:] == (2, 3, 32, 32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_an_error_naming_the_file(root, bad, capsys):
    """Issue 18: one NaN in a FEATAudios file made `data check` say OK and `predict --data`
    drop that video's instances with exit code 0."""
    from avis.cli.main import main

    _, video = first_video(root)
    name = video["file_names"][0].split("/")[0]
    path = root / "train" / "FEATAudios" / f"{name}.npy"
    feats = np.load(path)
    feats[2, 7] = bad
    np.save(path, feats)
    with pytest.raises(DataError, match=rf"{name}\.npy: audio features of video {video['id']} .* 1 NaN or infinite values \(rows 2\)"):
        load_split(root, "train")
    assert main(["data", "check", "--root", str(root), "--split", "train", "--skip-frames"]) == 1
    assert f"{name}.npy" in capsys.readouterr().out
    out = root.parent / "pred"
    assert main(["predict", "--data", str(root), "--split", "train", "--out", str(out)]) == 1
    assert f"{name}.npy" in capsys.readouterr().err and not out.exists()


def test_decompression_bomb_frame_is_a_data_error(root):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)  # 3.6 G pixels announced
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    _, video = first_video(root)
    (root / "train" / "JPEGImages" / video["file_names"][0]).write_bytes(bomb)
    split = load_split(root, "train")
    with pytest.raises(DataError, match="cannot read frame 0 .*decompression bomb"):
        split.load_frames(split.video(video["id"]), [0])
