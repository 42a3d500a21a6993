"""`avis extract-audio` on a tiny AVISeg-layout split."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from avis.audio.features import weight_free_features
from avis.cli.extract_audio import read_split_videos
from avis.cli.main import main
from avis.errors import DataError
from avis.io.npy import save_npy_atomic

RATE = 16000


def _wav(path: Path, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = (rng.normal(0, 0.1, size=(int(seconds * RATE), 2)) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.tobytes())
    return samples


def _split(root: Path, lengths: dict[str, int]) -> None:
    videos = [
        {"id": i + 1, "length": n, "file_names": [f"{name}/{k:05d}.jpg" for k in range(n)]}
        for i, (name, n) in enumerate(lengths.items())
    ]
    (root / "val.json").write_text(
        json.dumps({"videos": videos, "annotations": [], "categories": []})
    )


def test_extracts_skips_and_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _split(tmp_path, {"vid_a": 3, "vid_b": 2})
    a = _wav(tmp_path / "val" / "WAVAudios" / "vid_a.wav", 2.5, 0)
    b = _wav(tmp_path / "val" / "WAVAudios" / "vid_b.wav", 2.0, 1)
    assert main(["extract-audio", "--root", str(tmp_path), "--split", "val"]) == 0
    feat_dir = tmp_path / "val" / "FEATAudios"
    got_a = np.load(feat_dir / "vid_a.npy")
    assert got_a.shape == (3, 128) and got_a.dtype == np.float32
    np.testing.assert_array_equal(got_a, weight_free_features(a, RATE, 3))
    np.testing.assert_array_equal(np.load(feat_dir / "vid_b.npy"), weight_free_features(b, RATE, 2))
    assert "2 written" in capsys.readouterr().out
    assert not list(feat_dir.glob(".*tmp"))

    save_npy_atomic(feat_dir / "vid_b.npy", np.zeros((2, 128), np.float32))
    assert main(["extract-audio", "--root", str(tmp_path), "--split", "val"]) == 0
    assert "0 written, 2 skipped" in capsys.readouterr().out
    assert not np.load(feat_dir / "vid_b.npy").any()
    assert main(["extract-audio", "--root", str(tmp_path), "--split", "val", "--overwrite"]) == 0
    assert np.load(feat_dir / "vid_b.npy").any()


def test_a_long_soundtrack_is_read_only_as_far_as_the_frames_need(tmp_path: Path, monkeypatch) -> None:
    """A 3-frame video with a 60-s WAV: the features are those of the whole file, and no more
    than the first seconds were read (a header may promise hours)."""
    from avis.io import audio_file

    _split(tmp_path, {"vid_a": 3})
    whole = _wav(tmp_path / "val" / "WAVAudios" / "vid_a.wav", 60.0, 0)
    read = []
    real_read_wav = audio_file.read_wav

    def spy(path, seconds=None):
        samples, rate = real_read_wav(path, seconds)
        read.append(samples.shape[0] / rate)
        return samples, rate

    monkeypatch.setattr(audio_file, "read_wav", spy)
    assert main(["extract-audio", "--root", str(tmp_path), "--split", "val"]) == 0
    got = np.load(tmp_path / "val" / "FEATAudios" / "vid_a.npy")
    np.testing.assert_array_equal(got, weight_free_features(whole, RATE, 3))
    assert read == [5.0]  # 3 frames + 2 s of margin


def test_missing_audio_and_media_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _split(tmp_path, {"vid_c": 2})
    assert main(["extract-audio", "--root", str(tmp_path), "--split", "val"]) == 1
    assert "vid_c.wav" in capsys.readouterr().out
    media = tmp_path / "media"
    samples = _wav(media / "vid_c.wav", 2.0, 2)
    args = ["extract-audio", "--root", str(tmp_path), "--split", "val", "--media-dir", str(media)]
    assert main(args) == 0
    got = np.load(tmp_path / "val" / "FEATAudios" / "vid_c.npy")
    np.testing.assert_array_equal(got, weight_free_features(samples, RATE, 2))


def test_refuses_to_mix_extractors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _split(tmp_path, {"vid_d": 1})
    _wav(tmp_path / "val" / "WAVAudios" / "vid_d.wav", 1.0, 3)
    feat_dir = tmp_path / "val" / "FEATAudios"
    feat_dir.mkdir(parents=True)
    (feat_dir / "extractor.json").write_text(json.dumps({"extractor": "vggish"}))
    assert main(["extract-audio", "--root", str(tmp_path), "--split", "val"]) == 1
    assert "vggish" in capsys.readouterr().err


def test_bad_json(tmp_path: Path) -> None:
    (tmp_path / "val.json").write_text(json.dumps({"videos": [{"length": 2, "file_names": []}]}))
    with pytest.raises(DataError, match=r"videos\[0\].*file_names"):
        read_split_videos(tmp_path / "val.json")
    with pytest.raises(DataError, match="not found"):
        read_split_videos(tmp_path / "train.json")


# ---------------------------------------------------------------- issue 18: hostile and short input
def _split_names(root: Path, names: list[str], length: int = 2) -> None:
    videos = [{"id": i + 1, "length": length, "file_names": [f"{n}/{k:05d}.jpg" for k in range(length)]}
              for i, n in enumerate(names)]
    (root / "val.json").write_text(json.dumps({"videos": videos, "annotations": [], "categories": []}))


@pytest.mark.parametrize("name", ["/abs", "../up", "vid\x00x", "C:/x"])
def test_unsafe_names_are_refused_before_anything_is_read(tmp_path: Path, name: str, capsys) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _split_names(root, [name])
    # a soundtrack where an unchecked absolute / climbing name would find one
    _wav(tmp_path / "up.wav", 2.0, 0)
    _wav(tmp_path / "root" / "val" / "WAVAudios" / "up.wav", 2.0, 0)
    assert main(["extract-audio", "--root", str(root), "--split", "val"]) == 1
    err = capsys.readouterr().err
    assert "file_names[0]" in err and "Traceback" not in err
    assert not (root / "val" / "FEATAudios").exists() and not list(tmp_path.rglob("*.npy"))


def test_media_dir_names_are_not_glob_patterns(tmp_path: Path, capsys) -> None:
    _split_names(tmp_path, ["vid*"])
    media = tmp_path / "media"
    _wav(media / "vid_other.wav", 2.0, 0)  # `vid*.*` would match it
    args = ["extract-audio", "--root", str(tmp_path), "--split", "val", "--media-dir", str(media)]
    assert main(args) == 1
    assert "no soundtrack found" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "missing")]) == 1
    assert "--media-dir must be a folder" in capsys.readouterr().err


def test_short_audio_is_reported_with_numbers_or_fails_by_policy(tmp_path: Path, caplog, capsys) -> None:
    _split_names(tmp_path, ["short", "empty"], length=5)
    _wav(tmp_path / "val" / "WAVAudios" / "short.wav", 1.0, 0)
    _wav(tmp_path / "val" / "WAVAudios" / "empty.wav", 0.0, 0)
    base = ["extract-audio", "--root", str(tmp_path), "--split", "val"]
    assert main([*base, "--short-audio", "error"]) == 1
    out = capsys.readouterr().out
    assert "1.00 s of audio for a 5-frame video" in out and "0.00 s of audio" in out
    assert not list((tmp_path / "val" / "FEATAudios").glob("*.npy"))
    with caplog.at_level("WARNING"):
        assert main(base) == 0
    assert "4 of 5 feature rows are silence" in caplog.text and "5 of 5" in caplog.text
    assert np.load(tmp_path / "val" / "FEATAudios" / "short.npy").shape == (5, 128)


def test_truncated_and_garbage_wavs(tmp_path: Path, caplog, capsys) -> None:
    _split_names(tmp_path, ["odd", "garbage"])
    wav_dir = tmp_path / "val" / "WAVAudios"
    full = (_wav(wav_dir / "odd.wav", 2.0, 0), (wav_dir / "odd.wav").read_bytes())[1]
    (wav_dir / "odd.wav").write_bytes(full[:-3])  # cut inside the last stereo frame
    (wav_dir / "garbage.wav").write_bytes(full[:12] + b"junk" + (2**31).to_bytes(4, "little") + full[12:])
    with caplog.at_level("WARNING"):
        assert main(["extract-audio", "--root", str(tmp_path), "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert "1 written" in out and "garbage.wav" in out and "Traceback" not in out
    assert "truncated WAV: the header promises 32000 frames" in caplog.text and "holds 31999" in caplog.text


def test_corrupt_marker_is_a_clean_error(tmp_path: Path, capsys) -> None:
    _split_names(tmp_path, ["vid"])
    _wav(tmp_path / "val" / "WAVAudios" / "vid.wav", 2.0, 0)
    feat_dir = tmp_path / "val" / "FEATAudios"
    feat_dir.mkdir(parents=True)
    (feat_dir / "extractor.json").write_text("{not json")
    assert main(["extract-audio", "--root", str(tmp_path), "--split", "val"]) == 1
    assert "unreadable extractor marker" in capsys.readouterr().err
