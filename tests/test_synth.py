"""The synthetic benchmark: determinism, readable exact GT, geometry, sounds, schedule, CLI."""

import colorsys
import json
import wave

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from avis.audio.features import weight_free_features
from avis.cli.main import main
from avis.data import load_split
from avis.data.synth import SYNTH_CLASSES, SynthConfig, generate_dataset, make_demo_video
from avis.data.synth.classes import SHAPES, shape_parts
from avis.data.synth.geometry import area, box, visible_pieces
from avis.data.synth.scene import sample_scene
from avis.data.synth.sound import class_signal

TINY = SynthConfig(size=48, min_frames=4, max_frames=7)
COUNTS = {"train": 3, "val": 2}


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_a")
    generate_dataset(root, seed=11, counts=COUNTS, config=TINY, workers=1)
    return root


def test_same_seed_gives_byte_identical_files(generated, tmp_path):
    generate_dataset(tmp_path, seed=11, counts=COUNTS, config=TINY, workers=1)
    a, b = files(generated), files(tmp_path)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    kinds = {k.split("/")[1] for k in a if "/" in k}
    assert kinds == {"JPEGImages", "WAVAudios", "FEATAudios"}


@pytest.mark.slow  # starts two worker processes (a few seconds of imports)
def test_worker_processes_give_the_same_files(generated, tmp_path):
    generate_dataset(tmp_path, seed=11, counts=COUNTS, config=TINY, workers=2)
    assert files(tmp_path) == files(generated)


def test_different_seeds_differ(generated, tmp_path):
    generate_dataset(tmp_path, seed=12, counts=COUNTS, config=TINY, workers=1)
    a, b = files(generated), files(tmp_path)
    assert a["train.json"] != b["train.json"]
    shared = [k for k in a.keys() & b.keys() if k.endswith(".jpg")]
    assert shared and any(a[k] != b[k] for k in shared)


def test_gt_polygons_read_by_pycocotools_and_match_pixels(generated):
    obj = json.loads((generated / "train.json").read_text())
    videos = {v["id"]: v for v in obj["videos"]}
    checked = 0
    for ann in obj["annotations"]:
        video = videos[ann["video_id"]]
        h, w = video["height"], video["width"]
        assert len(ann["segmentations"]) == video["length"]
        for t, seg in enumerate(ann["segmentations"]):
            if seg is None:
                assert ann["areas"][t] is None and ann["bboxes"][t] is None
                continue
            assert isinstance(seg, list) and all(len(p) >= 6 and len(p) % 2 == 0 for p in seg)
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))  # the official polygon path
            mask = mask_utils.decode(rle).astype(bool)
            assert mask.sum() == ann["areas"][t] > 0
            assert mask_utils.toBbox(rle).tolist() == ann["bboxes"][t]
            frame = np.asarray(Image.open(generated / "train" / "JPEGImages" / video["file_names"][t]).convert("RGB"))
            inner = mask.copy()
            inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
            if inner.sum() >= 4:  # the object's own saturated colour fills its mask
                rgb = frame[inner].mean(0) / 255
                expected_hue = SYNTH_CLASSES[ann["category_id"] - 1].hue / 360
                hue, sat, _ = colorsys.rgb_to_hsv(*rgb)
                assert sat > 0.5 and min(abs(hue - expected_hue), 1 - abs(hue - expected_hue)) < 0.06
                checked += 1
    assert checked > 10


def test_split_loads_and_categories(generated):
    split = load_split(generated, "val")
    assert split.class_names == [c.name for c in SYNTH_CLASSES[: TINY.num_classes]]
    assert all(split.audio_lengths[v.id] == v.length for v in split.videos)
    with wave.open(str(split.wav_path(split.videos[0]))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.getnframes() == split.videos[0].length * 16000


def raster(parts, size):
    polys = [p.ravel().tolist() for p in parts]
    if not polys:
        return np.zeros((size, size), bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, size, size))).astype(bool)


def outline(mask):
    return ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask, border_value=1)


@pytest.mark.parametrize("seed", range(4))
def test_visible_pieces_equal_object_minus_occluders(seed):
    rng = np.random.default_rng(seed)
    size = 64
    for _ in range(25):
        shapes = rng.choice(sorted(SHAPES), size=3)
        objs = [shape_parts(s, rng.uniform(-5, 69, 2), rng.uniform(12, 40), rng.uniform(0, 6)) for s in shapes]
        pieces = visible_pieces(objs[0], objs[1] + objs[2], box(0, 0, size, size))
        got = raster(pieces, size)
        occluded = raster(objs[1] + objs[2], size)
        want = raster(objs[0], size) & ~occluded
        # pixel rasterisation may differ only next to an outline (of the result or an occluder)
        allowed = outline(want) | outline(occluded)
        assert not ((got ^ want) & ~allowed).any()


def test_hidden_object_has_no_pieces():
    big = shape_parts("square", np.array([30.0, 30.0]), 40, 0.0)
    small = shape_parts("circle", np.array([30.0, 30.0]), 10, 0.0)
    assert visible_pieces(small, big, box(0, 0, 64, 64)) == []
    ring = visible_pieces(big, small, box(0, 0, 64, 64))  # a hole: pieces around it
    hole = raster(small, 64)
    covered = raster(ring, 64)
    assert not (covered & ndimage.binary_erosion(hole)).any()
    assert (covered | hole).sum() == raster(big, 64).sum()
    assert all(area(p) > 0 for p in ring)
    outside = shape_parts("star", np.array([-40.0, 10.0]), 30, 0.3)
    assert visible_pieces(outside, [], box(0, 0, 64, 64)) == []


def test_each_class_sound_is_recognised_from_one_second_of_features():
    sr = 16000
    feats, labels = [], []
    for c, cls in enumerate(SYNTH_CLASSES):
        for rep in range(4):
            rng = np.random.default_rng([c, rep])
            wav = class_signal(cls, sr, sr, rng, freq_jitter=0.03) * rng.uniform(0.4, 1.0)
            wav += rng.standard_normal(sr).astype(np.float32) * 0.004
            feats.append(weight_free_features(wav, sr, 1)[0])
            labels.append(c)
    feats, labels = np.array(feats), np.array(labels)
    for i in range(len(feats)):  # leave-one-out nearest class mean
        means = [feats[(labels == c) & (np.arange(len(feats)) != i)].mean(0) for c in range(len(SYNTH_CLASSES))]
        assert int(np.argmin([np.linalg.norm(feats[i] - m) for m in means])) == labels[i]


def test_scene_schedules_follow_the_spec():
    cfg = SynthConfig()
    silent, frames = 0, 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        length = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        scene = sample_scene(rng, length, cfg)
        n_classes = len(scene.sounding_classes) + len(scene.distractor_classes)
        assert 1 <= len(scene.objects) <= cfg.max_objects and 1 <= n_classes <= cfg.max_classes_per_video
        assert not set(scene.sounding_classes) & set(scene.distractor_classes)
        on = np.stack([scene.sounding[c] for c in scene.sounding_classes])
        assert on.any(1).all()  # every sounding class sounds at some time
        assert set(scene.sounding) == set(scene.sounding_classes)  # distractors never sound
        silent += int((~on.any(0)).sum())
        frames += length
    assert 0.03 < silent / frames < 0.12


def test_cli_synth_check_stats(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["synth", "--out", str(out), "--num-train", "2", "--num-val", "1", "--num-test", "1",
            "--size", "48", "--min-frames", "4", "--max-frames", "5", "--workers", "1", "--seed", "3"]  # fmt: skip
    assert main(args) == 0
    assert main(["data", "check", "--root", str(out)]) == 0
    capsys.readouterr()
    assert main(["data", "stats", "--root", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == {"train", "val", "test"} and stats["train"]["videos"] == 2
    assert main(["data", "stats", "--root", str(out)]) == 0
    assert "silent" in capsys.readouterr().out
    (out / "val" / "FEATAudios" / "val_0000.npy").unlink()
    assert main(["data", "check", "--root", str(out), "--split", "val"]) == 1
    assert main(["synth", "--out", str(out), "--preset", "nope"]) == 1
    empty = tmp_path / "empty"
    zero = ["--num-train", "0", "--num-val", "0", "--num-test", "0", "--workers", "1"]
    assert main(["synth", "--out", str(empty), *zero]) == 1  # nothing to generate: refused
    assert not empty.exists()


def test_demo_video_has_mp4_with_sound(tmp_path):
    import av

    demo = make_demo_video(tmp_path, seed=2, num_frames=3, fps=2, config=SynthConfig(size=48))
    split = load_split(demo.root, demo.split)
    assert split.videos[0].length == 3 and demo.frames_dir.is_dir()
    with av.open(str(demo.mp4)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].rate == 16000
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (48, 48, 3)
    first_jpeg = np.asarray(Image.open(demo.frames_dir / "00000.jpg").convert("RGB")).astype(float)
    assert np.abs(frames[0].astype(float) - first_jpeg).mean() < 12  # the mp4 shows the same scene
