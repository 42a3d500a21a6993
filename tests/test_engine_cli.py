"""`avis train` and `avis ablate-audio` end to end on a tiny generated synthetic data set."""

import json

import pytest
import torch

from avis.cli.main import main
from avis.engine.checkpoint import list_checkpoints
from avis.models.checkpoint import load_model

SMALL_MODEL = [
    "model.backbone_kwargs={norm: GN, stem_channels: 8}",
    "model.conv_dim=16",
    "model.norm_groups=4",
    "model.mask_dim=16",
    "model.pixel_decoder_layers=1",
    "model.pixel_decoder_ffn_dim=32",
    "model.frame_hidden_dim=16",
    "model.frame_ffn_dim=32",
    "model.frame_queries=5",
    "model.frame_dec_layers=2",
    "model.last_layer_num=2",
    "model.video_hidden_dim=16",
    "model.video_ffn_dim=32",
    "model.video_queries=4",
    "model.video_enc_layers=1",
    "model.video_dec_layers=2",
    "model.test_short_side=32",
]
TINY_RUN = [
    "data.short_sides=[32]",
    "data.max_size=32",
    "data.clip_frames=3",
    "batch_size=2",
    "iterations=3",
    "log_every=1",
    "checkpoint_every=2",
    "data.eval_max_videos=2",
    "threads=1",
    "processes=1",
]


def test_train_resume_and_ablate_audio(synth_root, tmp_path, capsys):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    args = ["train", "--preset", "avism_tiny", "--data", str(synth_root), "--output", str(run)]
    assert main(args + SMALL_MODEL + TINY_RUN) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["iteration"] for r in train] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] for r in train)  # finite, not NaN
    assert len(evals) == 1 and {"FSLA", "HOTA", "mAP", "FSLA_official"} <= set(evals[0])
    assert [it for it, _ in list_checkpoints(run)] == [2, 3]
    for name in ("config.yaml", "curves.png", "model_final.pth"):
        assert (run / name).is_file()

    model, cfg = load_model(run / "model_final.pth")  # the model's own loader reads it
    assert cfg.num_classes == 6 and cfg.frame_queries == 5
    saved = torch.load(run / "model_final.pth", weights_only=True)
    assert len(saved["class_names"]) == 6

    # a second run into the same folder needs --resume; with it, training continues to 4
    assert main(args + SMALL_MODEL + TINY_RUN) == 1
    assert (
        main(
            args
            + ["--resume"]
            + SMALL_MODEL
            + TINY_RUN[:-6]
            + ["iterations=4", "threads=1", "processes=1"]
        )
        == 0
    )
    assert list_checkpoints(run)[-1][0] == 4

    out = tmp_path / "ablation.json"
    ablate = ["ablate-audio", "--weights", str(run / "model_final.pth"), "--data", str(synth_root)]
    assert (
        main(ablate + ["--split", "val", "--modes", "real,shuffled,zeros", "--json", str(out)]) == 0
    )
    results = json.loads(out.read_text())
    assert set(results) == {"real", "shuffled", "zeros", "drop_shuffled", "drop_zeros"}
    drop = results["drop_shuffled"]["FSLA"]
    assert drop == pytest.approx(results["real"]["FSLA"] - results["shuffled"]["FSLA"])


def test_processes_option_runs_local_ddp(synth_root, tmp_path):
    run = tmp_path / "ddp"
    args = ["train", "--preset", "avism_tiny", "--data", str(synth_root), "--output", str(run)]
    overrides = [o for o in TINY_RUN if not o.startswith(("processes", "iterations"))]
    assert (
        main(args + ["--no-eval"] + SMALL_MODEL + overrides + ["iterations=2", "processes=2"]) == 0
    )
    checkpoint = torch.load(list_checkpoints(run)[-1][1], weights_only=True)
    assert checkpoint["world_size"] == 2 and checkpoint["iteration"] == 2
    assert len(checkpoint["rng"]) == 2
