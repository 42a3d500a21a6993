"""`avis demo`: bundled assets found through importlib.resources, outputs written, scorable."""

import json
from dataclasses import replace

import av
import pytest
import torch

from avis.cli.main import main
from avis.errors import CheckpointError
from avis.inference import shipped
from avis.inference.results import read_results
from avis.io.video import read_video
from avis.models.avism import build_avism
from avis.models.checkpoint import save_model
from avis.models.config import avism_tiny


def test_demo_assets_are_bundled():
    video = shipped.asset_path(shipped.DEMO_VIDEO)
    gt = json.loads(shipped.asset_path(shipped.DEMO_ANNOTATIONS).read_text())
    assert video.is_file() and video.stat().st_size < 1_000_000
    (entry,) = gt["videos"]
    decoded = read_video(video, fps=1.0)
    assert decoded.has_audio and decoded.num_frames == entry["length"]
    assert decoded.frames.shape[1:3] == (entry["height"], entry["width"])


def test_missing_shipped_checkpoint_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "asset_path", lambda name: tmp_path / name)
    with pytest.raises(CheckpointError, match="shipped tiny checkpoint is missing.*--weights"):
        shipped.shipped_checkpoint()


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    """A random-weight tiny model carrying the demo's class names (stands in for the trained one)."""
    torch.manual_seed(0)
    gt = json.loads(shipped.asset_path(shipped.DEMO_ANNOTATIONS).read_text())
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    cfg = replace(avism_tiny(), num_classes=len(names), test_short_side=64, test_max_size=64)
    path = tmp_path_factory.mktemp("ckpt") / "raw.pth"
    save_model(path, build_avism(cfg), cfg, optimizer={"state": {}})
    shipped_path = path.with_name("shipped.pth")
    shipped.ship_checkpoint(path, shipped_path, names, audio_features=shipped.WEIGHT_FREE)
    return shipped_path


def test_ship_checkpoint_strips_training_state(demo_checkpoint):
    obj = torch.load(demo_checkpoint, weights_only=True)
    assert "optimizer" not in obj and obj["audio_features"] == "weight_free"
    assert all(v.dtype != torch.float32 for v in obj["model"].values())


def test_demo_end_to_end(demo_checkpoint, tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out), "--weights", str(demo_checkpoint), "--threshold", "0"]) == 0
    folder = out / "demo"
    for name in ("results.json", "summary.json", "timeline.png", "overlay.mp4", "ground_truth.json"):
        assert (folder / name).is_file(), name
    printed = capsys.readouterr().out
    assert "avis eval --gt" in printed and str(folder) in printed
    with av.open(str(folder / "overlay.mp4")) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert sum(1 for _ in container.decode(audio=0)) > 0
    records = read_results(folder / "results.json")
    assert records and {r["video_id"] for r in records} == {1}
    evaluate = pytest.importorskip("avis.eval.evaluate").evaluate
    result = evaluate(folder / "ground_truth.json", folder / "results.json")
    assert {"FA", "HOTA", "AP_all"} <= set(result.metrics)  # FA = FSLA


def test_ship_command(tmp_path, capsys):
    cfg = replace(avism_tiny(), num_classes=2)
    raw = tmp_path / "trained.pth"
    save_model(raw, build_avism(cfg), cfg, optimizer={"state": {}}, iteration=5)
    classes = tmp_path / "train.json"
    classes.write_text(json.dumps({"categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}]}))
    out = tmp_path / "shipped.pth"
    assert shipped.main([str(raw), "--classes-from", str(classes), "--out", str(out)]) == 0
    obj = torch.load(out, weights_only=True)
    assert obj["class_names"] == ["a", "b"] and "optimizer" not in obj
    assert "2 classes" in capsys.readouterr().out


@pytest.mark.skipif(
    not shipped.asset_path(shipped.SHIPPED_CHECKPOINT).is_file(),
    reason="the trained tiny checkpoint is not shipped yet (python -m avis.inference.shipped)",
)
def test_demo_with_the_shipped_checkpoint(tmp_path):
    from avis.inference.predictor import VideoPredictor

    predictor = VideoPredictor.from_checkpoint()
    gt = json.loads(shipped.asset_path(shipped.DEMO_ANNOTATIONS).read_text())
    assert predictor.info.audio_features == "weight_free"
    assert predictor.class_names == [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    assert main(["demo", "--out", str(tmp_path), "--no-overlay"]) == 0
    assert read_results(tmp_path / "demo" / "results.json")
