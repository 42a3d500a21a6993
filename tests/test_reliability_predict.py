"""Issue 18 for `avis predict` / `convert`: outputs are checked before the model runs, nothing
is overwritten without --force, a broken file does not stop the others, bad weights and
devices are clean errors, and the outputs of a real clip end where the media ends."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avis.cli.main import main
from avis.data.synth.media import write_mp4
from avis.errors import CheckpointError, MediaError
from avis.inference.predictor import VideoPredictor
from avis.models.avism import build_avism
from avis.models.checkpoint import save_model
from avis.models.config import avism_tiny
from shared_data import MEDIA

SIZE, FRAMES, RATE = 48, 3, 16000
BBB = MEDIA / "bigbuckbunny.mp4"


def _tiny_config():
    return replace(avism_tiny(), test_short_side=SIZE, test_max_size=SIZE * 2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = _tiny_config()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_model(path, build_avism(cfg), cfg, audio_features="weight_free")
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    out = {}
    for name in ("a", "b"):
        frames = [rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(FRAMES)]
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(FRAMES * RATE) / RATE)
        out[name] = folder / f"{name}.mp4"
        write_mp4(out[name], frames, 1, tone, RATE)
    out["broken"] = folder / "broken.mp4"
    out["broken"].write_bytes(out["a"].read_bytes()[:300])  # header only
    return out


def _args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--weights", str(checkpoint), "--out", str(out), "--threshold", "0", "--no-overlay", *extra]




def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_earlier_outputs_are_kept_without_force(checkpoint, videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(videos["a"]), *_args(checkpoint, out)]) == 0
    before = _snapshot(out)
    assert set(before) == {"a/results.json", "a/summary.json", "a/timeline.png"}
    assert main(["predict", str(videos["a"]), *_args(checkpoint, out)]) == 1
    assert "use --force" in capsys.readouterr().err
    assert _snapshot(out) == before
    # --force rewrites; an overlay of an earlier run that this run does not write goes away
    (out / "a" / "overlay.mp4").write_bytes(b"an older run's overlay")
    assert main(["predict", str(videos["a"]), *_args(checkpoint, out, "--force")]) == 0
    after = _snapshot(out)
    assert set(after) == set(before) and after["a/results.json"] == before["a/results.json"]
    assert not list(out.rglob(".*tmp*"))


def test_bad_out_is_found_before_the_model_runs(videos, tmp_path, no_model, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    cases = {
        str(a_file): "is a file",
        str(a_file / "sub"): "is a file",
        "/proc/avis_cannot_write_here": "cannot write",
    }
    for out, why in cases.items():
        assert main(["predict", str(videos["a"]), "--out", out]) == 1
        assert why in capsys.readouterr().err
    assert a_file.read_text() == "keep me"
    (tmp_path / "x" / "a").mkdir(parents=True)
    (tmp_path / "x" / "a" / "results.json").mkdir()  # a folder where a file goes
    assert main(["predict", str(videos["a"]), "--out", str(tmp_path / "x")]) == 1
    assert "use --force" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.mp4"), str(videos["a"])]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert main(["predict", str(tmp_path)]) == 1
    assert "a folder, not a video file" in capsys.readouterr().err
    assert main(["predict", "--data", str(tmp_path / "nothing")]) == 1
    assert "--data must be a data set folder" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    assert main(["predict", "--data", str(tmp_path / "data")]) == 1
    assert "annotation file of split 'test' not found" in capsys.readouterr().err
    (tmp_path / "data" / "test.json").write_text("{}")
    (tmp_path / "split_out").mkdir()
    (tmp_path / "split_out" / "results.json").write_text("earlier")
    assert main(["predict", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "split_out")]) == 1
    assert "use --force" in capsys.readouterr().err
    assert (tmp_path / "split_out" / "results.json").read_text() == "earlier"


@pytest.mark.parametrize(
    "option, value",
    [("--threshold", "5"), ("--threshold", "-0.1"), ("--threshold", "nan"), ("--fps", "0"),
     ("--fps", "-1"), ("--fps", "inf"), ("--fps", "1e9"), ("--device", "gpu"), ("--streaming", "maybe")],
)  # fmt: skip
def test_out_of_range_values_are_argument_errors(videos, option, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", str(videos["a"]), option, value])
    assert info.value.code == 2 and option in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:99"])
def test_missing_cuda_device_is_a_clean_error(checkpoint, videos, tmp_path, device, capsys):
    assert main(["predict", str(videos["a"]), "--device", device, *_args(checkpoint, tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"device '{device}'" in err and "CUDA is not available" in err
    with pytest.raises(Exception, match="CUDA is not available"):
        VideoPredictor.from_checkpoint(checkpoint, device=device)


def test_a_broken_file_does_not_stop_the_others(checkpoint, videos, tmp_path, capsys):
    out = tmp_path / "out"
    paths = [str(videos[k]) for k in ("a", "broken", "b")]
    assert main(["predict", *paths, *_args(checkpoint, out)]) == 1
    captured = capsys.readouterr()
    assert "1 of 3 videos failed" in captured.err and "broken.mp4" in captured.err
    assert "Traceback" not in captured.err
    assert (out / "a" / "results.json").is_file() and (out / "b" / "results.json").is_file()
    assert not (out / "broken").exists()


def test_weights_with_nan_name_the_tensor(checkpoint, videos, tmp_path, capsys):
    obj = torch.load(checkpoint, weights_only=True)
    key = next(k for k, v in obj["model"].items() if v.is_floating_point() and v.numel() > 3)
    obj["model"][key] = obj["model"][key].contiguous().clone()  # conv weights may be stored channels-last
    obj["model"][key].view(-1)[:2] = torch.tensor([float("nan"), float("inf")])
    bad = tmp_path / "nan.pth"
    torch.save(obj, bad)
    with pytest.raises(CheckpointError, match=rf"{key} \(2 of \d+ values\)"):
        VideoPredictor.from_checkpoint(bad)
    assert main(["predict", str(videos["a"]), *_args(bad, tmp_path / "o")]) == 1
    assert key in capsys.readouterr().err and not (tmp_path / "o").exists()
    out = tmp_path / "official.pth"
    assert main(["convert", "--src", str(bad), "--out", str(out)]) == 1
    assert key in capsys.readouterr().err and not out.exists()


def test_non_finite_precomputed_features_are_refused(checkpoint):
    predictor = VideoPredictor.from_checkpoint(checkpoint)
    frames = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    audio = np.zeros((2, predictor.config.audio_dim), np.float32)
    audio[1, 3] = np.nan
    with pytest.raises(MediaError, match="NaN or infinite"):
        predictor.predict((frames, audio))


def test_convert_checks_preset_and_out(checkpoint, tmp_path, capsys):
    out = tmp_path / "official.pth"
    assert main(["convert", "--src", str(checkpoint), "--preset", "avism_r50", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--preset avism_r50 does not fit --src" in err and not out.exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    for extra in ([], ["--force"]):
        assert main(["convert", "--src", str(checkpoint), "--out", str(folder), *extra]) == 1
        assert "is a folder" in capsys.readouterr().err
    assert main(["convert", "--src", str(checkpoint), "--out", "/proc/avis.pth", "--force"]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert main(["convert", "--src", str(checkpoint), "--out", str(checkpoint), "--force"]) == 1
    assert "also an input" in capsys.readouterr().err
    assert main(["convert", "--src", str(tmp_path), "--out", str(out)]) == 1
    assert "must be a file" in capsys.readouterr().err
    assert main(["convert", "--src", str(checkpoint), "--out", str(out)]) == 0
    assert not list(tmp_path.glob(".*tmp*"))


def test_argument_errors_come_before_heavy_imports(tmp_path):
    code = (
        "import sys; from avis.cli.main import main; "
        f"rc = [main(['predict', {str(tmp_path / 'x.mp4')!r}]), "
        f"main(['convert', '--src', {str(tmp_path / 'x.pth')!r}, '--out', 'y.pth'])]; "
        "print(rc, 'torch' in sys.modules, 'av' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[1, 1] False False", run.stdout + run.stderr


@pytest.mark.skipif(not BBB.is_file(), reason="no bigbuckbunny.mp4")
def test_big_buck_bunny_outputs_end_with_the_media(tmp_path, capsys):
    """A 5.28-s clip (5.1 AAC): intervals, summary, overlay video and audio end at 5.28 s, and
    the overlay keeps the six channels (it wrote a 6-s video with a mono mix)."""
    out = tmp_path / "out"
    assert main(["predict", str(BBB), "--out", str(out), "--threshold", "0"]) == 0
    assert "INFO" not in capsys.readouterr().err  # quiet by default
    summary = json.loads((out / "bigbuckbunny" / "summary.json").read_text())
    assert summary["duration"] == pytest.approx(5.28) and summary["num_frames"] == 6
    ends = [end for track in summary["tracks"] for _, end in track["intervals"]]
    assert ends and max(ends) <= 5.28 + 1e-9
    with av.open(str(out / "bigbuckbunny" / "overlay.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        video_s = float(video.duration * video.time_base)
        audio_s = float(audio.duration * audio.time_base)
        assert audio.codec_context.channels == 6
    assert video_s == pytest.approx(5.28, abs=0.11)  # 10-fps output: within one output frame
    assert audio_s == pytest.approx(5.28, abs=0.05)


def test_a_video_failing_midway_leaves_none_of_its_outputs(checkpoint, videos, tmp_path, monkeypatch, capsys):
    import avis.inference.report as report

    def fail(*args, **kwargs):
        raise MediaError("the timeline could not be drawn")

    monkeypatch.setattr(report, "write_timeline", fail)
    out = tmp_path / "out"
    assert main(["predict", str(videos["a"]), *_args(checkpoint, out)]) == 1
    assert "could not be drawn" in capsys.readouterr().err
    assert not (out / "a").exists()  # results.json and summary.json of this run removed


@pytest.mark.parametrize("field, value", [("score_threshold", float("nan")), ("mask_prob_threshold", 2.0)])
def test_checkpoint_thresholds_out_of_range(tmp_path, field, value):
    torch.manual_seed(0)
    cfg = replace(_tiny_config(), **{field: value})
    path = tmp_path / "odd.pth"
    save_model(path, build_avism(cfg), cfg)
    with pytest.raises(CheckpointError, match=rf"{field} must be in \[0, 1\]"):
        VideoPredictor.from_checkpoint(path)


def test_brackets_in_paths_and_class_names_are_printed_as_text(videos, tmp_path, capsys):
    """Rich markup: a path like `o[/]a` raised MarkupError after the model had run."""
    torch.manual_seed(0)
    cfg = _tiny_config()
    ckpt = tmp_path / "names.pth"
    names = [f"[/]class{i}[bold]" for i in range(cfg.num_classes)]
    save_model(ckpt, build_avism(cfg), cfg, class_names=names, audio_features="weight_free")
    folder = tmp_path / "v["
    folder.mkdir()
    (folder / "]a.mp4").write_bytes(videos["a"].read_bytes())
    (folder / "]b.mp4").write_bytes(videos["broken"].read_bytes())
    out = tmp_path / "o["
    code = main(["predict", str(folder / "]a.mp4"), str(folder / "]b.mp4"), *_args(ckpt, out)])
    captured = capsys.readouterr()
    assert code == 1 and "internal error" not in captured.err, captured.err
    assert "[/]class" in captured.out and "]b.mp4" in captured.out
    assert (out / "]a" / "results.json").is_file()


@pytest.mark.parametrize(
    "names, message",
    [
        (lambda k: ["ok"] * (k - 1) + ["\x1b]0;owned\x07\x1b[2J"], "holds a control character"),
        (lambda k: k, "must list"),  # a number where the list belongs (len() of an int before)
        (lambda k: "abc", "must list"),
    ],
    ids=["escape-sequence", "number", "string"],
)
def test_stored_class_names_are_checked(checkpoint, tmp_path, names, message):
    """Class names stored in a checkpoint reach the terminal, the overlay and the timeline:
    control characters are refused as in JSON category names, and a field that is no list of
    names is a CheckpointError (a number was an internal TypeError)."""
    obj = torch.load(checkpoint, weights_only=True)
    obj["class_names"] = names(obj["config"]["num_classes"])
    bad = tmp_path / "names.pth"
    torch.save(obj, bad)
    with pytest.raises(CheckpointError, match=message):
        VideoPredictor.from_checkpoint(bad)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda obj: obj["config"].update(conv_dim="zz"), "config field conv_dim must be an integer >= 0, found 'zz'"),
        (lambda obj: obj["config"].update(audio_dim=-1), "config field audio_dim must be an integer >= 0, found -1"),
        (lambda obj: obj["config"].update(backbone="zz"), "the model config cannot be built (ValueError: unknown backbone 'zz'"),
        (lambda obj: obj["config"].update(frame_heads=0), "the model config cannot be built (ZeroDivisionError"),
        # sizes far beyond the weights': refused by the shapes, before any memory is allocated
        (lambda obj: obj["config"].update(conv_dim=10**6), "wrong shape"),
        (lambda obj: obj["model"].update({next(iter(obj["model"])): [1.0, 2.0]}), "1 entries are not dense tensors"),
        (lambda obj: obj["model"].update({k: v.to_sparse() for k, v in list(obj["model"].items())[:1]}), "(Tensor, torch.sparse_coo)"),
        # fields only inference reads (a TypeError in F.pad, "selected index k out of range")
        (lambda obj: obj["config"].update(size_divisibility=float("nan")), "config field size_divisibility must be an integer >= 0, found nan"),
        (lambda obj: obj["config"].update(top_k=-1), "config field top_k must be an integer >= 1, found -1"),
    ],
    ids=["string-size", "negative-size", "unknown-backbone", "zero-heads", "huge-size", "list-entry", "sparse-entry", "nan-divisibility", "negative-top-k"],
)
def test_a_checkpoint_config_or_entry_that_cannot_build_is_a_checkpoint_error(checkpoint, videos, tmp_path, edit, message, capsys):
    """Third barrage: the config stored in an avis checkpoint went to the model constructors
    unchecked (internal errors from torch deep inside a layer; a size of 10^6 would allocate
    terabytes), and a list or sparse tensor in the state dict was an AttributeError /
    NotImplementedError. The model is now built on the meta device and compared first."""
    obj = torch.load(checkpoint, weights_only=True)
    edit(obj)
    bad = tmp_path / "bad.pth"
    torch.save(obj, bad)
    with pytest.raises(CheckpointError) as info:
        VideoPredictor.from_checkpoint(bad)
    assert message in str(info.value)
    assert main(["predict", str(videos["a"]), *_args(bad, tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err and not (tmp_path / "o").exists()
    assert main(["convert", "--src", str(bad), "--out", str(tmp_path / "c.pth")]) == 1
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err and not (tmp_path / "c.pth").exists()


def test_pipes_and_devices_are_named_not_missing(tmp_path, capsys):
    """Third barrage: a named pipe or /dev/zero given as a video, checkpoint or JSON was
    reported as "not found" although it exists; now what it is, with the --online hint."""
    import os

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert main(["predict", str(fifo), "--out", str(tmp_path / "o")]) == 1
    assert "pipe.mp4 (a named pipe); a video must be a file (a pipe or a stream: --online SOURCE)" in capsys.readouterr().err
    assert main(["predict", "/dev/null", "--out", str(tmp_path / "o")]) == 1
    assert "/dev/null (a device)" in capsys.readouterr().err
    assert main(["convert", "--src", "/dev/null", "--out", str(tmp_path / "c.pth")]) == 1
    assert "/dev/null: a device, not a regular file" in capsys.readouterr().err
    assert main(["eval", "--gt", str(fifo), "--pred", "/dev/null"]) == 1
    assert "pipe.mp4: a named pipe, not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c.pth").exists()
