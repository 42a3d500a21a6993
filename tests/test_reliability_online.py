"""Issue 18's conventions for `avis predict --online` (issue 21): arguments, SOURCE and the
output folder checked before the model loads, nothing overwritten without --force, the final
outputs written by `avis predict`'s writers (atomic, ending where the media ends, the
soundtrack's own channels), online.jsonl whole lines even when the run dies, and bad media
(non-finite audio, no audio, truncated or broken files, an mp4 through a pipe) as one line."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avis.cli.main import main
from avis.errors import MediaError
from avis.inference.online_records import read_records
from avis.models.avism import build_avism
from avis.models.checkpoint import save_model
from avis.models.config import avism_tiny

sys.path.insert(0, str(Path(__file__).parent))
from test_reliability_predict import _snapshot  # noqa: E402

SIZE, RATE = 48, 16000
FINAL = ("results.json", "summary.json", "timeline.png", "overlay.mp4")


def write_media(path: Path, num_frames: int, fps: int = 1, channels: int = 1, audio: bool = True,
                audio_codec: str = "aac", nan_at: float | None = None, seed: int = 0) -> Path:  # fmt: skip
    """A small clip: random frames at `fps`, a tone with `channels` channels (as long as the
    video), NaN samples from `nan_at` s on (pcm_f32le in Matroska can carry them)."""
    rng = np.random.default_rng(seed)
    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps, options={"threads": "1", "tune": "zerolatency"})
        video.pix_fmt, video.height, video.width = "yuv420p", SIZE, SIZE
        stream = container.add_stream(audio_codec, rate=RATE, layout=layout) if audio else None
        total = int(num_frames / fps * RATE)
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / RATE).astype(np.float32)
        samples = np.repeat(tone[None], channels, 0)  # (C, n)
        if nan_at is not None:
            samples[:, int(nan_at * RATE) :] = np.nan
        step = (stream.codec_context.frame_size or 1024) if stream is not None else 1
        sent = 0
        for i in range(num_frames):  # interleaved: each frame, then the audio up to its end
            image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            while stream is not None and sent < min(total, int((i + 1) / fps * RATE)):
                chunk = np.ascontiguousarray(samples[:, sent : sent + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = RATE, sent, Fraction(1, RATE)
                container.mux(stream.encode(frame))
                sent += step
        container.mux(video.encode())
        if stream is not None:
            container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = replace(avism_tiny(), test_short_side=SIZE, test_max_size=SIZE * 2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_model(path, build_avism(cfg), cfg, audio_features="weight_free")
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    out = {
        "a": write_media(folder / "a.mkv", 3),
        "stereo": write_media(folder / "stereo.mp4", 5, fps=2, channels=2),  # 2.5 s
        "silent": write_media(folder / "silent.mkv", 2, audio=False),
        "nan": write_media(folder / "nan.mkv", 12, audio_codec="pcm_f32le", nan_at=9.5),
        "long": write_media(folder / "long.mkv", 8),
    }
    out["broken"] = folder / "broken.mkv"
    out["broken"].write_bytes(out["a"].read_bytes()[:200])  # a header, no frame
    out["half"] = folder / "half.mkv"
    data = out["long"].read_bytes()
    out["half"].write_bytes(data[: len(data) // 2])
    return out


def _args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--weights", str(checkpoint), "--out", str(out), "--threshold", "0", "--latency", "1", *extra]


def _online(source, checkpoint, out, *extra) -> int:
    return main(["predict", "--online", str(source), *_args(checkpoint, out, *extra)])




def _lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# ---------------------------------------------------------------------- arguments first
def test_online_mistakes_are_found_before_the_model_loads(media, tmp_path, no_model, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    earlier = tmp_path / "earlier" / "a"
    earlier.mkdir(parents=True)
    (earlier / "online.jsonl").write_text("an earlier run\n")
    out_source = tmp_path / "o" / "overlay" / "overlay.mp4"  # would be its own output
    out_source.parent.mkdir(parents=True)
    out_source.write_bytes(media["a"].read_bytes())
    a = str(media["a"])
    cases = [
        (["--online", str(tmp_path / "nope.mkv")], "nope.mkv: --online source not found"),
        (["--online", str(tmp_path)], "is a folder"),
        (["--online", ""], "the --online source is empty"),
        (["--online", a, "--out", str(a_file)], "is a file"),
        (["--online", a, "--out", str(a_file / "sub")], "is a file"),
        (["--online", a, "--out", "/proc/avis_cannot_write_here"], "cannot write"),
        (["--online", a, "--out", str(tmp_path / "earlier")], "use --force"),
        (["--online", str(out_source), "--out", str(tmp_path / "o"), "--force"], "also an input"),
        (["--online", a, "--latency", "3", "--window", "2"], "--window (2 frames) must exceed"),
        (["--online", a, "--latency", "600", "--fps", "2"], "1200 frames; at most 599"),
        (["--online", a, "--spill-dir", str(tmp_path)], "--spill-dir: not used by --online"),
        (["--online", a, "--streaming", "yes"], "--streaming: not used by --online"),
        (["--online", a, a], "--online takes its SOURCE alone"),
        (["--online", a, "--data", str(tmp_path)], "--online takes its SOURCE alone"),
        ([a, "--realtime"], "--realtime paces an --online source"),
    ]
    for argv, message in cases:
        assert main(["predict", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert a_file.read_text() == "keep me"
    assert (earlier / "online.jsonl").read_text() == "an earlier run\n"
    assert sorted(p.name for p in earlier.iterdir()) == ["online.jsonl"]


@pytest.mark.parametrize(
    "option, value",
    [("--latency", "-1"), ("--latency", "nan"), ("--latency", "inf"), ("--latency", "1e9"),
     ("--window", "-1"), ("--window", "1.5"), ("--window", "100000"), ("--fps", "0"), ("--device", "gpu")],
)  # fmt: skip
def test_online_out_of_range_values_are_argument_errors(media, option, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--online", str(media["a"]), option, value])
    assert info.value.code == 2 and option in capsys.readouterr().err


def test_online_argument_errors_come_before_heavy_imports(tmp_path):
    code = (
        "import sys; from avis.cli.main import main; "
        f"rc = main(['predict', '--online', {str(tmp_path / 'x.mkv')!r}]); "
        "print(rc, 'torch' in sys.modules, 'av' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "1 False False", run.stdout + run.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_online_missing_cuda_device_is_a_clean_error(checkpoint, media, tmp_path, capsys):
    assert _online(media["a"], checkpoint, tmp_path / "o", "--device", "cuda:99") == 1
    err = capsys.readouterr().err
    assert "device 'cuda:99'" in err and "CUDA is not available" in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- outputs
def test_online_outputs_end_with_the_media_and_keep_the_channels(checkpoint, media, tmp_path, capsys):
    """A 2.5-s stereo clip at --fps 1: 3 frames; summary, timeline and overlay end at 2.5 s (as
    `avis predict` writes them), the overlay keeps both channels; no temporary file left."""
    out = tmp_path / "out"
    assert _online(media["stereo"], checkpoint, out) == 0
    folder = out / "stereo"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["online.jsonl", *FINAL])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["duration"] == pytest.approx(2.5) and summary["num_frames"] == 3
    ends = [end for track in summary["tracks"] for _, end in track["intervals"]]
    assert ends and max(ends) <= 2.5 + 1e-9
    with av.open(str(folder / "overlay.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert audio.codec_context.channels == 2
        video_s = float(video.duration * video.time_base)
        audio_s = float(audio.duration * audio.time_base)
    assert video_s == pytest.approx(2.5, abs=0.11) and audio_s == pytest.approx(2.5, abs=0.05)
    offline = tmp_path / "offline"
    assert main(["predict", str(media["stereo"]), *_args(checkpoint, offline, "--no-overlay")]) == 0
    offline_summary = json.loads((offline / "stereo" / "summary.json").read_text())
    assert offline_summary["duration"] == summary["duration"]
    assert not list(out.rglob(".*tmp*"))
    capsys.readouterr()


def test_online_earlier_outputs_are_kept_without_force(checkpoint, media, tmp_path, capsys):
    out = tmp_path / "out"
    assert _online(media["a"], checkpoint, out, "--no-overlay") == 0
    before = _snapshot(out)
    assert set(before) == {"a/online.jsonl", "a/results.json", "a/summary.json", "a/timeline.png"}
    assert _online(media["a"], checkpoint, out, "--no-overlay") == 1
    assert "use --force" in capsys.readouterr().err
    assert _snapshot(out) == before
    (out / "a" / "overlay.mp4").write_bytes(b"an older run's overlay")
    assert _online(media["a"], checkpoint, out, "--no-overlay", "--force") == 0
    after = _snapshot(out)
    assert set(after) == set(before) and after["a/online.jsonl"] == before["a/online.jsonl"]
    assert after["a/results.json"] == before["a/results.json"]


def test_online_failure_while_writing_leaves_no_final_file(checkpoint, media, tmp_path, monkeypatch, capsys):
    import avis.inference.report as report

    def fail(*args, **kwargs):
        raise MediaError("the timeline could not be drawn")

    monkeypatch.setattr(report, "write_timeline", fail)  # the writer of the final outputs
    out = tmp_path / "out"
    assert _online(media["a"], checkpoint, out) == 1
    assert "could not be drawn" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "a").iterdir()) == ["online.jsonl"]  # results, summary removed
    assert [r["frame"] for r in _lines(out / "a" / "online.jsonl")] == [0, 1, 2]


# ---------------------------------------------------------------------- online.jsonl
def test_a_failure_midway_keeps_whole_records_and_writes_no_final_file(checkpoint, media, tmp_path, capsys):
    """NaN samples from 9.5 s on: a one-line error with the numbers; the records made final
    before it (the decoder holds back a few frames) stay as whole JSON lines; no final output."""
    out = tmp_path / "out"
    assert _online(media["nan"], checkpoint, out, "--latency", "0") == 1
    err = capsys.readouterr().err
    assert "non-finite samples (NaN or infinity)" in err and "the first at 9.50 s" in err and "Traceback" not in err
    assert "keeps the" in err and len(err.strip().splitlines()) == 1
    records = _lines(out / "nan" / "online.jsonl")
    assert [r["frame"] for r in records] == list(range(len(records))) and 1 <= len(records) <= 9
    assert not [name for name in FINAL if (out / "nan" / name).exists()]


def test_kill_9_leaves_whole_json_lines(checkpoint, media, tmp_path):
    """A real process killed (SIGKILL) while it streams: every line of online.jsonl parses."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "avis.cli.main", "predict", "--online", str(media["long"]), "--realtime",
           *_args(checkpoint, out, "--latency", "0", "--no-overlay")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    jsonl = out / "long" / "online.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.is_file() and jsonl.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    records = list(read_records(jsonl))
    assert len(records) >= 2 and [r["frame"] for r in records] == list(range(len(records)))
    assert jsonl.read_text().endswith("\n")


def test_a_line_cut_short_is_skipped_when_read(tmp_path, caplog):
    path = tmp_path / "online.jsonl"
    path.write_text('{"frame": 0, "instances": []}\n{"frame": 1, "inst')
    with caplog.at_level(logging.WARNING):
        assert [r["frame"] for r in read_records(path)] == [0]
    assert "line 2 is cut short" in caplog.text
    path.write_text('{"frame": 0\n{"frame": 1, "instances": []}\n')
    with pytest.raises(Exception, match="line 1 is not a JSON record"):
        list(read_records(path))


# ---------------------------------------------------------------------- bad media
def test_bad_media_are_one_line_errors_or_warnings_with_numbers(checkpoint, media, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert _online(media["silent"], checkpoint, out) == 1
    err = capsys.readouterr().err
    assert "no audio stream" in err and "--allow-silent" in err and len(err.strip().splitlines()) == 1
    assert not (out / "silent").exists()
    with caplog.at_level(logging.WARNING):
        assert _online(media["silent"], checkpoint, out, "--allow-silent") == 0
    assert "no audio stream, using silence" in caplog.text
    with av.open(str(out / "silent" / "overlay.mp4")) as container:
        assert not container.streams.audio
    assert _online(media["broken"], checkpoint, out) == 1
    err = capsys.readouterr().err
    assert "broken.mkv" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "broken").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _online(media["half"], checkpoint, out) == 0  # the first half of an 8-s file
    assert re.search(r"decoded 4\.00 s of video, but the file header promises 8\.\d\d s", caplog.text)
    assert "probably truncated" in caplog.text and caplog.text.count("s of audio, but") == 1
    summary = json.loads((out / "half" / "summary.json").read_text())
    assert summary["duration"] < 7.5 and summary["num_frames"] == len(_lines(out / "half" / "online.jsonl"))


def test_an_mp4_through_a_pipe_is_a_one_line_error(checkpoint, media, tmp_path, monkeypatch, capsys):
    """`... | avis predict --online -` with a plain mp4 (PyAV writes its index at the end)."""
    read_end, write_end = os.pipe()
    data = media["stereo"].read_bytes()

    def feed():
        try:
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(data)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with os.fdopen(read_end, "r") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code = _online("-", checkpoint, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1 and "a pipe needs a streamable container" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "stdin").exists()
    writer.join(timeout=10)
