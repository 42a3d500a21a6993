"""The `avis serve` job pipeline on real (small) videos with a small random model: the same
files as `avis predict`, the memory-bounded path, progress, and clear refusals of bad uploads."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from avis.inference import predictor as predictor_module
from avis.inference.predictor import VideoPredictor
from avis.inference.report import predict_files
from avis.models.avism import build_avism
from avis.models.checkpoint import save_model
from avis.models.config import avism_tiny
from avis.serve.jobs import Job, JobError, JobSettings, MemoryBudget
from avis.serve.pipeline import OUTPUT_FILES, ModelBank, PredictRunner, probe_upload
from test_io_video import _faststart_copy, make_video

SAMPLE_RATE = 16000
KEEP_ALL = JobSettings(threshold=0.0)  # a random model's scores are low


def tone(seconds: float) -> np.ndarray:  # (N, 1) float32
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    torch.manual_seed(0)
    cfg = replace(avism_tiny(), num_classes=3, test_short_side=64, test_max_size=64)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_model(path, build_avism(cfg), cfg)
    return VideoPredictor.from_checkpoint(path, threshold=0.0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return make_video(folder / "clip.mp4", 3.0, size=(96, 64), audio=tone(3.0), sample_rate=SAMPLE_RATE)


def run_job(bank: ModelBank, video, folder, settings=KEEP_ALL, max_duration_s=60.0):
    folder.mkdir(parents=True)
    job = Job("0" * 32, "my clip.mp4", folder, settings)
    shutil.copyfile(video, job.upload)
    reports: list[tuple[str, float]] = []
    PredictRunner(bank, max_duration_s)(job, lambda stage, progress: reports.append((stage, progress)))
    return job, reports


def test_a_job_writes_what_avis_predict_writes(predictor, clip, tmp_path):
    job, reports = run_job(ModelBank(predictor, MemoryBudget()), clip, tmp_path / "job")
    assert set(job.files) == set(OUTPUT_FILES) and all((job.folder / f).is_file() for f in OUTPUT_FILES)
    (reference,) = predict_files(predictor, [clip], tmp_path / "cli", overlay=False)
    assert json.loads((job.folder / "results.json").read_text()) == json.loads(reference.results.read_text())
    summary = json.loads((job.folder / "summary.json").read_text())
    assert summary["tracks"] == json.loads(reference.summary.read_text())["tracks"]
    assert summary["video"] == "my clip.mp4"  # the user's name, not the server's file
    assert job.result is not None and job.result["num_frames"] == 3
    assert [i["instance"] for i in job.result["instances"]] == [t["instance"] for t in summary["tracks"]]
    assert job.result["num_instances"] == reference.prediction.num_instances > 0
    progress = [p for _, p in reports]
    assert progress == sorted(progress) and progress[-1] < 1.0  # the manager sets 1.0 at the end
    stages = [s for s, _ in reports]
    assert "model: frame 3 of 3" in stages and stages[-1] == "drawing the overlay video"


def test_long_videos_take_the_memory_bounded_path(predictor, clip, tmp_path, monkeypatch):
    calls = []
    real = predictor_module.stream_video

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "stream_video", spy)
    roomy, _ = run_job(ModelBank(predictor, MemoryBudget()), clip, tmp_path / "roomy")
    assert calls == []  # 3 small frames fit the default budget
    tight = MemoryBudget(frame_memory_mb=1e-6, feature_budget_mb=1e-6)  # as if the video were long
    bounded, _ = run_job(ModelBank(predictor, tight), clip, tmp_path / "bounded")
    assert calls == [1]
    for name in ("results.json", "summary.json"):
        assert (bounded.folder / name).read_text() == (roomy.folder / name).read_text()


def test_settings_reach_the_predictor(predictor, clip, tmp_path):
    strict, _ = run_job(ModelBank(predictor, MemoryBudget()), clip, tmp_path / "a", JobSettings(threshold=1.0))
    assert strict.result is not None and strict.result["num_instances"] == 0
    with pytest.raises(JobError, match="device 'cuda:7' is not available"):
        run_job(ModelBank(predictor, MemoryBudget()), clip, tmp_path / "b", JobSettings(device="cuda:7"))


def test_precision_reaches_the_predictor(predictor, clip, tmp_path, monkeypatch):
    used = []
    real = predictor_module.precision_context

    def spy(precision, device):
        used.append((precision, str(device)))
        return real(precision, device)

    monkeypatch.setattr(predictor_module, "precision_context", spy)
    bank = ModelBank(predictor, MemoryBudget())
    job, _ = run_job(bank, clip, tmp_path / "a", replace(KEEP_ALL, precision="bf16"))
    assert used and set(used) == {("bf16", "cpu")} and job.result is not None and job.result["precision"] == "bf16"
    used.clear()
    job, _ = run_job(bank, clip, tmp_path / "b", KEEP_ALL)  # auto: the device's default
    assert set(used) == {("fp32", "cpu")} and job.result is not None and job.result["precision"] == "fp32"
    assert bank.precisions("cpu")[:3] == ["auto", "fp32", "bf16"] and "tf32" not in bank.precisions("cpu")
    with pytest.raises(JobError, match="precision 'tf32' is not offered on cpu"):
        run_job(bank, clip, tmp_path / "c", replace(KEEP_ALL, precision="tf32"))


def test_bad_uploads_are_refused_with_a_message(tmp_path, clip):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    with pytest.raises(JobError, match=r"^holiday.mp4: this file is not a video the server can read"):
        probe_upload(text, "holiday.mp4", 60)
    silent = make_video(tmp_path / "silent.mp4", 2.0)
    with pytest.raises(JobError, match="this video has no audio track"):
        probe_upload(silent, "silent.mp4", 60)
    with pytest.raises(JobError, match="the video is 3 s long; this server accepts videos up to 2 s"):
        probe_upload(clip, "clip.mp4", 2)
    probe = probe_upload(clip, "clip.mp4", 60)
    assert probe.has_audio and probe.duration == pytest.approx(3.0, abs=0.1)


def test_the_limit_is_on_the_video_not_a_longer_soundtrack(tmp_path):
    """A 2-s video with 10 s of sound is a 2-s video (the container's duration is that of its
    longest stream; read_video decodes the sound only to the video's end)."""
    long_sound = make_video(tmp_path / "long_sound.mp4", 2.0, audio=tone(10.0), sample_rate=SAMPLE_RATE)
    probe = probe_upload(long_sound, "long_sound.mp4", 5)
    assert probe.duration == pytest.approx(2.0, abs=0.1)


def test_library_errors_name_the_users_file(predictor, tmp_path):
    broken = tmp_path / "broken.mp4"  # a valid header, then the video stream cannot be decoded
    good = make_video(tmp_path / "good.mp4", 2.0, audio=tone(2.0), sample_rate=SAMPLE_RATE).read_bytes()
    broken.write_bytes(good[:64] + bytes(len(good) - 64))
    with pytest.raises(JobError) as caught:
        run_job(ModelBank(predictor, MemoryBudget()), broken, tmp_path / "job")
    assert caught.value.args[0].startswith("my clip.mp4: ")
    assert str(tmp_path / "job") not in str(caught.value)


def test_warnings_of_a_job_reach_its_result(predictor, clip, tmp_path):
    """Third barrage: a truncated upload decoded in part showed "done" on the page, its
    warning only in the server's log. The warnings avis logs while a job runs are now part of
    the job's result (with the user's file name), and an intact upload has none."""
    job, _ = run_job(ModelBank(predictor, MemoryBudget()), clip, tmp_path / "intact")
    assert job.result is not None and job.result["warnings"] == []
    _faststart_copy(clip, tmp_path / "fast.mp4")  # the header first, so half a file opens
    data = (tmp_path / "fast.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) * 2 // 3])
    job, _ = run_job(ModelBank(predictor, MemoryBudget()), tmp_path / "half.mp4", tmp_path / "half")
    assert job.result is not None and job.result["num_frames"] < 3
    warnings = job.result["warnings"]
    assert any("probably truncated" in w for w in warnings), warnings
    assert all(w.startswith("my clip.mp4: ") for w in warnings), warnings
    assert not any(str(job.upload) in w for w in warnings)
