"""Online mode: stream reading, incremental audio features, track ids over silence, bounded
state, pipes vs files, the CLI (`avis predict --online`)."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace

import av
import numpy as np
import pytest
import torch

from avis.audio.features import WeightFreeExtractor
from avis.cli.predict_online import run_online
from avis.errors import MediaError
from avis.inference.online import OnlineOptions, OnlinePredictor, TrackLinker, WindowTrack
from avis.inference.online_records import assemble, frame_record, read_records
from avis.inference.predictor import VideoPredictor
from avis.inference.shipped import ModelInfo, asset_path
from avis.io.stream import stream_frames
from avis.io.video import frame_audio_features, read_video
from avis.models.avism import build_avism
from avis.models.config import avism_tiny
from synth_inputs import model_audio

DEMO = asset_path("demo.mp4")


@pytest.fixture(scope="module")
def shipped():
    return VideoPredictor.from_checkpoint()


@pytest.fixture(scope="module")
def demo_mkv(tmp_path_factory):
    """The demo video remuxed into Matroska (a container that can be read from a pipe)."""
    path = tmp_path_factory.mktemp("media") / "demo.mkv"
    with av.open(str(DEMO)) as inp, av.open(str(path), "w") as out:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        mapped = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(*streams):
            if packet.dts is None:
                continue
            packet.stream = mapped[packet.stream.index]
            out.mux(packet)
    return path


# ---------------------------------------------------------------------- reading
def test_stream_frames_equal_read_video_and_audio_features_equal_offline():
    offline = read_video(DEMO)
    extractor = WeightFreeExtractor()
    items = list(stream_frames(DEMO))
    assert len(items) == offline.num_frames
    for i, item in enumerate(items):
        assert item.index == i and np.array_equal(item.frame, offline.frames[i])
    incremental = np.stack([extractor(item.audio, item.sample_rate, 1)[0] for item in items])
    assert np.array_equal(incremental, frame_audio_features(offline, extractor))  # bit for bit


def test_stream_errors_are_media_errors(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        list(stream_frames(tmp_path / "missing.mkv"))
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(MediaError):
        list(stream_frames(bad))


# ---------------------------------------------------------------------- linking
def _window_track(label, embed, masks, score=0.9, num_classes=3):
    probs = np.full(num_classes, 0.05)
    probs[label] = 0.9
    return WindowTrack(0, label, score, probs, np.asarray(embed, float) / np.linalg.norm(embed), masks)


def test_linker_keeps_the_id_of_a_source_that_falls_silent_and_returns():
    """A track kept for 5 windows, absent for 10 (no shared frames left), then back with a
    similar embedding: same id. Another class or an unrelated embedding: a new id."""
    linker = TrackLinker(OnlineOptions(latency=1, window=4))
    blob = np.zeros((4, 6, 6), bool)
    blob[:, 1:4, 1:4] = True
    ids = []
    for step in range(5):
        (track,) = linker.link([_window_track(0, [1, 0.1, 0], blob)], step, step)
        ids.append(track.track_id)
    for step in range(5, 15):
        assert linker.link([], step, step) == []
    (back,) = linker.link([_window_track(0, [1, 0.2, 0.05], blob)], 15, 15)
    assert ids == [1] * 5 and back.track_id == 1
    linker.link([], 16, 16)
    other = linker.link(
        [_window_track(1, [1, 0.2, 0.05], blob), _window_track(0, [0, 0, 1], blob)], 30, 30
    )
    assert [t.track_id for t in other] == [2, 3]


def test_linker_follows_mask_overlap_on_shared_frames():
    """Two tracks with the same class and embedding swap query order between windows: the
    mask overlap on the shared frames keeps each id on its object."""
    linker = TrackLinker(OnlineOptions(latency=1, window=4))
    left, right = np.zeros((4, 6, 6), bool), np.zeros((4, 6, 6), bool)
    left[:, :, :2], right[:, :, 4:] = True, True
    first = linker.link([_window_track(0, [1, 0, 0], left), _window_track(0, [1, 0, 0], right)], 0, 3)
    second = linker.link([_window_track(0, [1, 0, 0], right), _window_track(0, [1, 0, 0], left)], 1, 4)
    assert [t.track_id for t in first] == [1, 2] and [t.track_id for t in second] == [2, 1]


# ---------------------------------------------------------------------- the shipped model
def _silence_and_return_scene(spatial, seed=0, num_frames=30):
    """One sounding object (synthetic benchmark renderer) that sounds in seconds 0-7 and
    20-29 and is silent for the 12 s between (longer than the online window); stereo, with
    the map of where the sound is, for a `spatial` model."""
    from avis.data.synth.config import SynthConfig
    from avis.data.synth.render import render_frame, scene_parts
    from avis.data.synth.scene import sample_scene
    from avis.data.synth.writer import soundtrack

    cfg = SynthConfig(
        distractor_prob=0.0, twin_prob=0.0, sounding_class_weights=(1.0,),
        enter_leave_prob=0.0, silent_fraction=0.0, stereo=spatial,
    )  # fmt: skip
    on = np.zeros(num_frames, bool)
    on[:8] = on[20:] = True
    scene = sample_scene(np.random.default_rng(seed), num_frames, cfg)
    c = scene.sounding_classes[0]
    scene = dataclasses.replace(scene, sounding={c: on}, gains={c: np.where(on, 0.8, 0.0)})
    frames = np.stack([render_frame(scene, scene_parts(scene, float(t)), 4) for t in range(num_frames)])
    wave = soundtrack(scene, cfg, np.random.default_rng(seed))
    return frames, model_audio(wave, cfg.sample_rate, num_frames, spatial), on


def test_track_id_survives_silence_with_the_shipped_model(shipped):
    frames, audio, on = _silence_and_return_scene(shipped.config.spatial_audio)
    online = OnlinePredictor(shipped, OnlineOptions(latency=3))
    results = list(online.run(zip(frames, audio)))
    assert [r.index for r in results] == list(range(len(frames)))
    sounding_ids = [set(r.track_ids[r.sounding].tolist()) for r in results]
    assert all(len(ids) == 1 for ids, o in zip(sounding_ids, on) if o)  # one track while it sounds
    assert not any(ids for ids, o in zip(sounding_ids, on) if not o)  # none while silent
    assert any(len(r.track_ids) == 0 for r in results)  # the track was not live throughout
    before, after = sounding_ids[0], sounding_ids[-1]
    assert before == after == set().union(*sounding_ids)  # the same id before and after
    # without re-identification the returning source would get a new id: the test can fail
    strict = OnlinePredictor(shipped, OnlineOptions(latency=3, reid_similarity=2.0))
    ids = [set(r.track_ids[r.sounding].tolist()) for r in strict.run(zip(frames, audio))]
    assert ids[0] != ids[-1]


def test_whole_video_window_gives_the_offline_masks(shipped):
    """Window = latency + 1 = the video length: every frame comes from the window over the
    whole video, i.e. the offline video module; the masks equal offline's (splitting off)."""
    frames, audio, _ = _silence_and_return_scene(shipped.config.spatial_audio, num_frames=12)
    plain = VideoPredictor(shipped.model, shipped.config, shipped.info, split_components=False)
    offline = plain.predict((frames, audio))
    online = OnlinePredictor(plain, OnlineOptions(latency=11, window=12))
    records = [frame_record(r, plain.class_names) for r in online.run(zip(frames, audio))]
    prediction, _ = assemble(records, frames.shape[1:3], source="x", fps=1.0, class_names=plain.class_names,
                             audio_features="precomputed")  # fmt: skip
    off_masks = {m.tobytes() for m in offline.masks()}
    assert offline.num_instances > 0
    assert {m.tobytes() for m in prediction.masks()} == off_masks
    assert sorted(prediction.labels.tolist()) == sorted(offline.labels.tolist())


# ---------------------------------------------------------------------- bounded state, presets
def _random_predictor(**overrides):
    torch.manual_seed(0)
    cfg = replace(avism_tiny(), test_short_side=32, test_max_size=64, score_threshold=0.0, **overrides)
    model = build_avism(cfg).eval()
    info = ModelInfo("random", "avis", [f"c{i}" for i in range(cfg.num_classes)], "weight_free")
    return VideoPredictor(model, cfg, info)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the tiny preset as is (official options: one mask embedding per track)
        {"per_frame_mask_embed": True, "audio_mask_bias": True, "coord_freqs": 4, "split_components": True},
        {"mask_quality": True, "sim_use_clip": False},  # no similarity head: mask embeddings link
        {"use_sim": False, "window_size": 0},
    ],
)
def test_state_stays_bounded_over_a_long_stream(overrides):
    predictor = _random_predictor(**overrides)
    options = OnlineOptions(latency=2, window=6, max_dormant=3)
    online = OnlinePredictor(predictor, options)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    sizes = []
    emitted = 0
    for _ in range(30):
        noisy = np.clip(frame.astype(int) + rng.integers(-60, 60, frame.shape), 0, 255).astype(np.uint8)
        emitted += len(online.push(noisy, rng.normal(size=128).astype(np.float32)))
        splitter = len(online.splitter.state) if online.splitter is not None else 0
        sizes.append((len(online.buffer), len(online.linker.live), len(online.linker.dormant), splitter))
    emitted += len(online.flush())
    assert emitted == 30
    buffer, live, dormant, splitter = np.asarray(sizes).max(0)
    assert buffer == 6 and live <= predictor.config.video_queries and dormant <= 3
    assert splitter <= live + dormant
    assert online.linker.next_id > 1  # tracks were made (score threshold 0)


# ---------------------------------------------------------------------- pipes and the CLI
def _jsonl(folder):
    return [json.loads(line) for line in (folder / "online.jsonl").read_text().splitlines()]


def test_named_pipe_gives_the_same_results_as_the_file(shipped, demo_mkv, tmp_path):
    online = OnlinePredictor(shipped, OnlineOptions(latency=3))
    run_online(online, str(demo_mkv), tmp_path / "file", overlay=False)
    fifo = tmp_path / "stream.fifo"
    os.mkfifo(fifo)
    data = demo_mkv.read_bytes()

    def feed():
        with open(fifo, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    run_online(online, str(fifo), tmp_path / "pipe", overlay=False)
    writer.join()
    from_file, from_pipe = _jsonl(tmp_path / "file"), _jsonl(tmp_path / "pipe")
    assert len(from_file) == 12 and from_pipe == from_file
    assert any(r["instances"] for r in from_file)
    assert (tmp_path / "pipe" / "results.json").read_bytes() == (tmp_path / "file" / "results.json").read_bytes()


def test_cli_online_from_stdin(demo_mkv, tmp_path):
    """`avis predict --online -` reading a non-seekable pipe; every output written; the
    records are the ones the file gives, and results.json is assembled from them."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "avis.cli.main", "predict", "--online", "-", "--latency", "2", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, stderr = proc.communicate(demo_mkv.read_bytes(), timeout=300)  # a pipe: not seekable
    assert proc.returncode == 0, stderr.decode()
    folder = out / "stdin"
    for name in ("online.jsonl", "results.json", "summary.json", "timeline.png", "overlay.mp4"):
        assert (folder / name).is_file(), name
    records = _jsonl(folder)
    assert [r["frame"] for r in records] == list(range(12))
    prediction, ids = assemble(read_records(folder / "online.jsonl"), (128, 128), source="-", fps=1.0,
                               class_names=[], audio_features="")  # fmt: skip
    results = json.loads((folder / "results.json").read_text())
    assert len(results) == prediction.num_instances == len(ids)
    assert [r["segmentations"] for r in results] == [list(track) for track in prediction.rles]
    with av.open(str(folder / "overlay.mp4")) as overlay:
        assert overlay.streams.audio  # the soundtrack came through the pipe too


def test_cli_online_realtime_reports_frames_behind(tmp_path, shipped):
    online = OnlinePredictor(shipped, OnlineOptions(latency=1))
    from avis.data.synth.media import write_mp4

    demo = read_video(DEMO)
    short = tmp_path / "short.mp4"  # 3 s of the demo (a file: paced at its own speed)
    write_mp4(short, demo.frames[:3], 1, demo.audio[: 3 * demo.sample_rate], demo.sample_rate)
    report = run_online(online, str(short), tmp_path / "rt", realtime=True, overlay=False)
    records = _jsonl(tmp_path / "rt")
    assert report["frames"] == len(records) == 3
    assert all(isinstance(r["frames_behind"], int) and r["frames_behind"] >= 0 for r in records)
    assert report["seconds"] >= 2.0  # paced: frame 2's second of audio ends at 3 s


def test_cli_online_rejects_bad_arguments(tmp_path, capsys):
    from avis.cli.main import main

    assert main(["predict", "--online", str(tmp_path / "nope.mkv"), "--out", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["predict", "x.mp4", "--online", "y.mkv"]) == 1
    with pytest.raises(SystemExit):  # range-checked by argparse (tests/test_reliability_online.py)
        main(["predict", "--online", "y.mkv", "--latency", "-1"])
    assert main(["predict", "x.mp4", "--realtime"]) == 1


def test_ctrl_c_ends_a_live_stream_with_every_output_written(shipped, tmp_path, monkeypatch):
    import avis.io.stream as stream_module

    real = stream_module.stream_frames

    class Interrupted:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)
            self.info = self.inner.info

        def __iter__(self):
            for item in self.inner:
                if item.index == 5:
                    raise KeyboardInterrupt
                yield item

    monkeypatch.setattr(stream_module, "stream_frames", Interrupted)
    online = OnlinePredictor(shipped, OnlineOptions(latency=3))
    report = run_online(online, str(DEMO), tmp_path / "live")
    assert report["interrupted"] and report["frames"] == 5
    assert [r["frame"] for r in _jsonl(tmp_path / "live")] == list(range(5))  # the last L flushed too
    results = json.loads((tmp_path / "live" / "results.json").read_text())
    assert all(len(r["segmentations"]) == 5 for r in results)
    assert (tmp_path / "live" / "overlay.mp4").is_file()
