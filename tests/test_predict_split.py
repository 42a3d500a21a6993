"""Whole-split inference: one results.json; 2-process torchrun output identical to 1 process."""

import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from avis.data.split import load_split
from avis.data.synth import SynthConfig, generate_dataset
from avis.errors import DataError
from avis.inference.predictor import VideoPredictor
from avis.inference.results import decode_rle, read_results
from avis.inference.split_predict import shard
from avis.models.avism import build_avism
from avis.models.checkpoint import save_model
from avis.models.config import avism_tiny

FRAME_SIZE = 64
NUM_VIDEOS = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(size=FRAME_SIZE, min_frames=3, max_frames=5)
    generate_dataset(root, seed=3, counts={"test": NUM_VIDEOS}, config=cfg, workers=1)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, dataset):
    torch.manual_seed(0)
    names = load_split(dataset, "test").class_names
    cfg = replace(avism_tiny(), num_classes=len(names), test_short_side=FRAME_SIZE, test_max_size=FRAME_SIZE)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_model(path, build_avism(cfg), cfg, class_names=names, audio_features="weight_free")
    return path


def test_shard_round_robin():
    items = list(range(7))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items


def _run(args, env_threads="1"):
    env = dict(os.environ, OMP_NUM_THREADS=env_threads, MKL_NUM_THREADS=env_threads)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_split_results_and_sharded_identical(dataset, checkpoint, tmp_path):
    common = ["predict", "--data", str(dataset), "--split", "test", "--weights", str(checkpoint), "--threshold", "0"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    _run([sys.executable, "-m", "avis.cli.main", *common, "--out", str(single)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, "-m", "avis.cli.main", *common, "--out", str(sharded)])
    one = (single / "results.json").read_bytes()
    assert one == (sharded / "results.json").read_bytes()
    records = read_results(single / "results.json")
    split = load_split(dataset, "test")
    assert sorted({r["video_id"] for r in records}) == sorted(v.id for v in split.videos)
    ids = [r["video_id"] for r in records]
    assert ids == sorted(ids)
    for record in records:
        video = split.video(record["video_id"])
        assert len(record["segmentations"]) == video.length
        assert decode_rle(record["segmentations"][0]).shape == (video.height, video.width)
        assert record["category_id"] in {c.id for c in split.categories}


def test_split_checks_the_model_fits(dataset, tmp_path):
    cfg = replace(avism_tiny(), num_classes=3, test_short_side=FRAME_SIZE, test_max_size=FRAME_SIZE)
    path = tmp_path / "three.pth"
    save_model(path, build_avism(cfg), cfg)
    predictor = VideoPredictor.from_checkpoint(path)
    with pytest.raises(DataError, match="test.json.*categories.*3 classes"):
        predictor.predict_split(dataset, "test", tmp_path / "out")


def test_extractor_marker_mismatch_warns(tmp_path, caplog):
    from avis.inference.split_predict import _check_extractor

    marker = tmp_path / "extractor.json"
    marker.write_text('{"extractor": "vggish"}')
    _check_extractor(marker, "weight_free")
    assert "MISMATCH" in caplog.text and "vggish" in caplog.text
    caplog.clear()
    _check_extractor(marker, "vggish")
    _check_extractor(tmp_path / "absent.json", "weight_free")
    assert "MISMATCH" not in caplog.text
