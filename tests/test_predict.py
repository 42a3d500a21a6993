"""`avis predict` and `VideoPredictor` end to end on generated videos (tiny random-weight model)."""

import json
from dataclasses import replace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from avis.cli.main import main
from avis.data.synth.media import write_mp4
from avis.errors import CheckpointError, MediaError
from avis.inference.predictor import VideoPredictor
from avis.inference.results import decode_rle, read_results
from avis.models.avism import build_avism
from avis.models.checkpoint import avis_to_official, save_model
from avis.models.config import avism_tiny

SIZE = 48  # frame side of the generated videos
NUM_FRAMES = 4
SAMPLE_RATE = 16000
CLASS_NAMES = [f"thing{i}" for i in range(avism_tiny().num_classes)]


def _tiny_config():
    # small network input so a test runs in seconds on 2 cores
    return replace(avism_tiny(), test_short_side=SIZE, test_max_size=SIZE * 2)


def _frames(num_frames=NUM_FRAMES, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.full((num_frames, SIZE, SIZE + 16, 3), 40, np.uint8)
    for t in range(num_frames):
        y, x = 8 + 2 * t, 10 + 3 * t
        frames[t, y : y + 16, x : x + 16] = (220, 60, 30)
    return np.clip(frames + rng.integers(0, 8, frames.shape), 0, 255).astype(np.uint8)


def _tone(seconds):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = _tiny_config()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_model(path, build_avism(cfg), cfg, class_names=CLASS_NAMES, audio_features="weight_free")
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_mp4(path, _frames(), 1, _tone(NUM_FRAMES), SAMPLE_RATE)
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return VideoPredictor.from_checkpoint(checkpoint, threshold=0.0)  # keep every candidate


def test_cli_predict_writes_every_output(checkpoint, video, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--weights", str(checkpoint), "--out", str(out), "--threshold", "0", "--streaming", "yes"]
    code = main(["predict", str(video), *args])
    assert code == 0
    folder = out / "clip"
    records = read_results(folder / "results.json")
    assert records, "threshold 0 keeps every top-k candidate"
    for record in records:
        assert record["video_id"] == 1 and 1 <= record["category_id"] <= len(CLASS_NAMES)
        assert len(record["segmentations"]) == NUM_FRAMES
        assert decode_rle(record["segmentations"][0]).shape == (SIZE, SIZE + 16)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["num_frames"] == NUM_FRAMES and len(summary["tracks"]) == len(records)
    assert {t["class_name"] for t in summary["tracks"]} <= set(CLASS_NAMES)
    with Image.open(folder / "timeline.png") as image:
        assert image.mode == "RGB" and image.height > 22 * len(records)
    with av.open(str(folder / "overlay.mp4")) as container:
        kinds = {s.type for s in container.streams}
        assert kinds == {"video", "audio"}
        frames = [f for f in container.decode(video=0)]
        assert frames and frames[0].height == SIZE
    printed = capsys.readouterr().out
    assert "sounding" in printed and str(folder) in printed


def test_streaming_matches_straightforward(predictor):
    frames = _frames(num_frames=7, seed=1)
    audio = np.random.default_rng(1).standard_normal((7, 128)).astype(np.float32)
    full = predictor.predict((frames, audio), streaming=False)
    streamed = predictor.predict((frames, audio), streaming=True)
    assert full.num_instances > 0
    # the memory-bounded path encodes fewer frames per call on the CPU: a convolution over
    # another batch size may round the last bit differently (masks stay identical)
    np.testing.assert_allclose(full.scores, streamed.scores, rtol=1e-6)
    np.testing.assert_array_equal(full.labels, streamed.labels)
    masks = full.masks()
    np.testing.assert_array_equal(masks, streamed.masks())
    per_frame = list(predictor.stream((frames, audio)))
    assert [f.index for f in per_frame] == list(range(7))
    for result in per_frame:
        np.testing.assert_array_equal(result.masks, masks[:, result.index])
        np.testing.assert_array_equal(result.sounding, masks[:, result.index].any(axis=(1, 2)))


def test_predict_file_api(predictor, video):
    prediction = predictor.predict(video)
    assert prediction.num_frames == NUM_FRAMES and prediction.image_size == (SIZE, SIZE + 16)
    assert prediction.audio_features == "weight_free"
    assert prediction.sounding.shape == (prediction.num_instances, NUM_FRAMES)
    assert [s.instance for s in prediction.summaries()] == list(range(1, prediction.num_instances + 1))


def test_unreadable_file(checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    assert main(["predict", str(bad), "--weights", str(checkpoint), "--out", str(tmp_path)]) == 1
    assert "broken.mp4" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.mp4"), "--weights", str(checkpoint)]) == 1


def test_missing_audio_needs_allow_silent(predictor, tmp_path):
    silent = tmp_path / "silent.mp4"
    with av.open(str(silent), mode="w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.height, stream.width, stream.pix_fmt = SIZE, SIZE + 16, "yuv420p"
        for image in _frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    with pytest.raises(MediaError, match="silent.mp4.*no audio stream"):
        predictor.predict(silent)
    prediction = predictor.predict(silent, allow_silent=True)
    assert prediction.num_frames == NUM_FRAMES


def test_weights_that_do_not_fit(checkpoint, tmp_path):
    cfg = replace(_tiny_config(), num_classes=5)
    other = tmp_path / "five_classes.pth"
    save_model(other, build_avism(cfg), cfg)
    with pytest.raises(CheckpointError, match="(?s)five_classes.pth.*do not fit.*class_embed"):
        VideoPredictor.from_checkpoint(other, preset="avism_tiny")
    with pytest.raises(CheckpointError, match="do not fit"):
        VideoPredictor.from_checkpoint(checkpoint, preset="avism_r50")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        VideoPredictor.from_checkpoint(tmp_path / "nothing.pth")


def test_official_checkpoint_needs_preset(tmp_path, caplog):
    cfg = avism_tiny()
    model = build_avism(cfg)
    official = tmp_path / "official.pth"
    torch.save({"model": avis_to_official(model.state_dict())}, official)
    with pytest.raises(CheckpointError, match="preset"):
        VideoPredictor.from_checkpoint(official)
    loaded = VideoPredictor.from_checkpoint(official, preset="avism_tiny")
    assert loaded.info.format == "official" and loaded.info.audio_features == "vggish"
    assert "MISMATCH" in caplog.text  # official models expect VGGish, none was given


class _LazyFrames:
    """Frames handed out one chunk at a time (records which slices were read)."""

    def __init__(self, frames):
        self._frames, self.shape, self.dtype, self.reads = frames, frames.shape, frames.dtype, []

    def __getitem__(self, index):
        self.reads.append((index.start, index.stop))
        return self._frames[index]


def test_lazy_frame_source_gives_the_same_prediction(predictor):
    frames = _frames(num_frames=5, seed=2)
    audio = np.random.default_rng(2).standard_normal((5, 128)).astype(np.float32)
    lazy = _LazyFrames(frames)
    from_lazy = predictor.predict((lazy, audio), streaming=True)
    from_array = predictor.predict((frames, audio), streaming=True)
    np.testing.assert_array_equal(from_lazy.masks(), from_array.masks())
    assert lazy.reads and all(stop - start <= predictor.options.run_chunk_size for start, stop in lazy.reads)


def test_cli_compile_flag_compiles_the_image_encoder(checkpoint, video, tmp_path, monkeypatch):
    import avis.inference.accelerate as accelerate

    compiled = []

    def fake_compile(model, parts):  # record the call; compiling itself is tested elsewhere
        compiled.append((type(model).__name__, tuple(parts)))
        return model

    monkeypatch.setattr(accelerate, "compile_for_inference", fake_compile)
    args = ["--weights", str(checkpoint), "--out", str(tmp_path), "--no-overlay", "--compile"]
    assert main(["predict", str(video), *args]) == 0
    assert compiled == [("AVISM", ("backbone", "pixel_decoder"))]
    assert (tmp_path / "clip" / "results.json").exists()


def test_lazy_track_masks_decode_the_same_masks(predictor, video):
    prediction = predictor.predict(video)
    dense = prediction.masks()
    assert prediction.num_instances > 0
    for i in range(prediction.num_instances):
        track = prediction.track_masks(i)
        assert track.shape == dense.shape[1:] and len(track) == NUM_FRAMES
        for t in range(NUM_FRAMES):
            np.testing.assert_array_equal(track[t], dense[i, t])
