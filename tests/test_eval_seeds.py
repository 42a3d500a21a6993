"""Issue 19 infrastructure: the synthetic generator's version in the split JSON, and the
cross-seed evaluation (`avis.engine.seeds`, `avis eval-seeds`) on tiny splits with the
shipped tiny checkpoint."""

import json
import logging
import math
from dataclasses import replace

import numpy as np
import pytest

from avis.cli.main import main
from avis.data.synth import SynthConfig, generate_dataset
from avis.data.synth.config import DEFAULT_SEED, SYNTH_VERSION, VERSION_KEY
from avis.data.synth.target import synth_version
from avis.engine import seeds
from avis.engine.evaluation import HEADLINE, SplitEvaluator, subset_annotations
from avis.errors import AvisError, DataError
from avis.eval import evaluate
from avis.inference.predictor import VideoPredictor
from avis.inference.shipped import shipped_checkpoint
from avis.models.avism import build_avism
from avis.models.checkpoint import save_model
from avis.models.config import avism_tiny

SEEDS = (11, 12)
VIDEOS = 2
OVERRIDES = {"size": 64, "min_frames": 3, "max_frames": 5}
TINY = SynthConfig(**OVERRIDES)
MAIN_KEYS = ("FSLA", "HOTA", "mAP", "FSLA_official", "HOTA_official", "mAP_official")


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("seeds")
    return seeds.evaluate_seeds(
        shipped_checkpoint(), SEEDS, work_dir=work, num_videos=VIDEOS, overrides=OVERRIDES, workers=1
    )


# ---------------------------------------------------------------- version of the generator
def test_split_json_carries_the_generator_version(tmp_path):
    generate_dataset(tmp_path, seed=1, counts={"test": 1}, config=TINY, workers=1)
    obj = json.loads((tmp_path / "test.json").read_text())
    assert obj["info"][VERSION_KEY] == TINY.version == 1  # mono scenes: version 1's files
    assert synth_version(obj) == 1
    stereo = replace(TINY, stereo=True)
    generate_dataset(tmp_path / "v2", seed=1, counts={"test": 1}, config=stereo, workers=1)
    obj = json.loads((tmp_path / "v2" / "test.json").read_text())
    assert synth_version(obj) == stereo.version == SYNTH_VERSION == 2
    assert seeds.split_name(1, "stereo", stereo, 1).startswith("synth-v2-stereo-")
    assert seeds.split_name(1, "easy", TINY, 1).startswith("synth-v1-easy-")


def test_files_without_a_version_are_version_1_and_bad_versions_are_refused():
    assert synth_version({"info": {"description": "x", "seed": 0}}) == 1  # written before versions
    assert synth_version({"videos": []}) == 1  # no info at all (AVISeg files)
    for bad in (0, -1, "1", 1.0, True):
        with pytest.raises(DataError, match=VERSION_KEY):
            synth_version({"info": {VERSION_KEY: bad}}, "x.json")
    with pytest.raises(DataError, match="update avis"):
        synth_version({"info": {VERSION_KEY: SYNTH_VERSION + 1}})


def test_cli_synth_default_seed_is_the_library_one():
    from avis.cli import synth

    assert synth.DEFAULT_SEED == DEFAULT_SEED


# ---------------------------------------------------------------- generated splits
def test_same_seed_is_reused_and_other_seeds_give_other_data(tmp_path):
    root, reused = seeds.make_test_split(tmp_path, 11, TINY, VIDEOS, workers=1)
    assert not reused and (root / "test.json").is_file() and not (root / "train.json").exists()
    before = files(root)
    again, reused = seeds.make_test_split(tmp_path, 11, TINY, VIDEOS, workers=1)
    assert again == root and reused and files(root) == before
    other, reused = seeds.make_test_split(tmp_path, 12, TINY, VIDEOS, workers=1)
    assert other != root and not reused
    a, b = (json.loads((r / "test.json").read_text()) for r in (root, other))
    assert a["info"]["seed"] == 11 and b["info"]["seed"] == 12
    assert a["annotations"] != b["annotations"]
    frame = "test/JPEGImages/test_0000/00000.jpg"
    assert files(root)[frame] != files(other)[frame]
    # the same seed generated elsewhere (no cache) gives the same bytes: the cache is faithful
    fresh, _ = seeds.make_test_split(tmp_path / "elsewhere", 11, TINY, VIDEOS, workers=1)
    assert files(fresh) == before


def test_a_stale_cached_split_is_regenerated(tmp_path):
    root, _ = seeds.make_test_split(tmp_path, 11, TINY, VIDEOS, workers=1)
    path = root / "test.json"
    obj = json.loads(path.read_text())
    obj["info"]["seed"] = 99  # not what the folder should hold
    path.write_text(json.dumps(obj))
    _, reused = seeds.make_test_split(tmp_path, 11, TINY, VIDEOS, workers=1)
    assert not reused and json.loads(path.read_text())["info"]["seed"] == 11


def test_a_foreign_folder_is_never_overwritten(tmp_path):
    root = tmp_path / seeds.split_name(11, "easy", TINY, VIDEOS)
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(AvisError, match="not part of an avis synthetic data set"):
        seeds.make_test_split(tmp_path, 11, TINY, VIDEOS, workers=1)
    assert (root / "notes.txt").read_text() == "mine"


def test_twin_videos():
    gt = {"annotations": [
        {"video_id": 1, "category_id": 3, "segmentations": [[[0]], None, [[0]]]},
        {"video_id": 1, "category_id": 3, "segmentations": [None, [[0]], [[0]]]},  # frame 2: both
        {"video_id": 2, "category_id": 3, "segmentations": [[[0]], None]},
        {"video_id": 2, "category_id": 3, "segmentations": [None, [[0]]]},  # never together
        {"video_id": 3, "category_id": 1, "segmentations": [[[0]], [[0]]]},
        {"video_id": 3, "category_id": 2, "segmentations": [[[0]], [[0]]]},  # two classes
    ]}  # fmt: skip
    assert seeds.twin_video_ids(gt) == {1}


# ---------------------------------------------------------------- seeds and summary
def test_seen_seeds_are_refused_unless_allowed(tmp_path, caplog):
    seen = seeds.seen_seeds(tmp_path / "model_final.pth")
    assert DEFAULT_SEED in seen
    with pytest.raises(AvisError, match=f"seed {DEFAULT_SEED} is the seed of"):
        seeds.check_seeds([5, DEFAULT_SEED], seen, allow_seen=False)
    with caplog.at_level(logging.WARNING):
        seeds.check_seeds([DEFAULT_SEED], seen, allow_seen=True)
    assert "not unseen data" in caplog.text
    with pytest.raises(AvisError, match="must differ"):
        seeds.check_seeds([5, 5], seen, allow_seen=False)
    with pytest.raises(AvisError, match="at least one"):
        seeds.check_seeds([], seen, allow_seen=False)


def test_seen_seeds_read_the_run_folders_training_data(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, seed=7, counts={"train": 1}, config=TINY, workers=1)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"data:\n  root: {data}\n")
    assert 7 in seeds.seen_seeds(run / "model_final.pth")
    assert 7 in seeds.seen_seeds(run / "checkpoints" / "checkpoint_100.pth")
    assert 7 not in seeds.seen_seeds(tmp_path / "elsewhere.pth")
    for text in ("data: [unclosed\n", "data:\n  root: ''\n", "- a list\n"):  # unreadable: skipped
        (run / "config.yaml").write_text(text)
        assert set(seeds.seen_seeds(run / "model_final.pth")) == {DEFAULT_SEED}


def test_summary_arithmetic(tmp_path):
    assert seeds.summarize([60.0, 50.0, 52.5]) == {"mean": 54.166666666666664, "spread": 10.0, "min": 50.0, "max": 60.0}
    assert all(math.isnan(v) for v in seeds.summarize([1.0, float("nan")]).values())
    assert all(math.isnan(v) for v in seeds.summarize([]).values())
    rep = seeds.SeedsReport("w", "easy", TINY)
    for seed, value in ((1, 40.0), (2, 46.0)):
        metrics = {s: {"mAP": value + (10 if split else 0)} for s, split in seeds.SETTINGS.items()}
        rep.results.append(seeds.SeedResult(seed, tmp_path, 3, 1, metrics))
    summary = rep.summary()
    assert summary["nosplit"]["mAP"]["mean"] == 43.0 and summary["nosplit"]["mAP"]["spread"] == 6.0
    assert summary["split"]["mAP"]["mean"] == 53.0 and summary["split"]["mAP"]["spread"] == 6.0
    as_json = json.loads(json.dumps(rep.to_json(), allow_nan=False))
    assert as_json["avis_synth_version"] == TINY.version == 1 and len(as_json["seeds"]) == 2


# ---------------------------------------------------------------- evaluation
def test_per_seed_metrics_equal_predict_and_evaluate_by_hand(report):
    predictor = VideoPredictor.from_checkpoint(shipped_checkpoint())
    names = list(predictor.class_names)
    assert [r.seed for r in report.results] == list(SEEDS)
    for result in report.results:
        assert result.num_videos == VIDEOS
        for setting, split in seeds.SETTINGS.items():
            evaluator = SplitEvaluator(result.root, "test", predictor.config, names, split_components=split)
            records = evaluator.predict_records(predictor.model)
            by_hand = evaluator.score(records)
            got = result.metrics[setting]
            assert {k: got[k] for k in MAIN_KEYS} == pytest.approx(by_hand, nan_ok=True)
            raw = json.loads((result.root / "test.json").read_text())
            twins = seeds.twin_video_ids(raw)
            assert result.num_twin_videos == len(twins)
            for key, ids in zip(seeds.TWIN_KEYS, (twins, {v.id for v in evaluator.videos} - twins)):
                if not ids:
                    assert math.isnan(got[key])
                    continue
                sub = evaluate(subset_annotations(raw, ids), [r for r in records if r["video_id"] in ids], protocol="fixed")
                assert got[key] == pytest.approx(sub.metrics[HEADLINE["mAP"]])


def test_splitting_is_applied_in_one_setting_only(report, monkeypatch):
    """Only the `split` setting goes through component splitting (a stand-in splitter that
    drops every track shows where it is applied: the other setting's scores stay as they
    were), and the summary is the settings' mean."""
    from avis.inference import components

    def drop_every_track(prediction, options):
        return replace(prediction, scores=prediction.scores[:0], labels=prediction.labels[:0], rles=[])

    assert any(r.num_twin_videos for r in report.results)
    result = report.results[0]
    monkeypatch.setattr(components, "split_components", drop_every_track)
    predictor = VideoPredictor.from_checkpoint(shipped_checkpoint(), split_components=False)
    metrics, _ = seeds.evaluate_split(predictor, result.root)
    assert metrics["nosplit"] == pytest.approx(result.metrics["nosplit"], nan_ok=True)
    assert result.metrics["nosplit"]["mAP"] > 0 and metrics["split"]["mAP"] == 0
    summary = report.summary()
    for setting in seeds.SETTINGS:
        values = [r.metrics[setting]["mAP"] for r in report.results]
        assert summary[setting]["mAP"]["mean"] == pytest.approx(np.mean(values))
        assert summary[setting]["mAP"]["spread"] == pytest.approx(max(values) - min(values))


def test_the_default_preset_is_the_benchmark_the_checkpoint_hears(report, tmp_path, caplog):
    """Stereo (v2) splits for a model that reads where the sound is, mono (v1) otherwise; a
    stereo model asked for mono splits is warned and gets maps made from the mono WAVs, which
    put every sound at the centre."""
    spatial = VideoPredictor.from_checkpoint(shipped_checkpoint()).config.spatial_audio
    assert report.preset == (seeds.STEREO_PRESET if spatial else seeds.DEFAULT_PRESET)
    assert report.config.stereo == spatial
    cfg = replace(avism_tiny(), spatial_audio_bands=32, spatial_audio_bins=16)
    path = tmp_path / "stereo.pth"
    save_model(path, build_avism(cfg), cfg)
    with caplog.at_level(logging.WARNING):
        mono = seeds.evaluate_seeds(
            path, SEEDS[:1], work_dir=tmp_path / "work", preset="easy", num_videos=1, overrides=OVERRIDES
        )
    assert "every sound at the centre" in caplog.text and not mono.config.stereo
    (maps_file,) = (mono.results[0].root / "test" / "FEATSpatial").glob("*.npy")
    maps = np.load(maps_file)  # (T, bands, positions)
    assert maps.shape[1:] == (32, 16) and maps.sum() > 0
    assert maps[..., 7:9].sum() == pytest.approx(maps.sum(), rel=1e-3)  # the two centre positions
    assert seeds.add_mono_maps(mono.results[0].root) == 0  # made once


def test_cli_writes_the_report_and_reuses_the_splits(report, tmp_path, capsys):
    work = report.results[0].root.parent
    out = tmp_path / "report.json"
    argv = ["eval-seeds", "--seeds", *map(str, SEEDS), "--videos", str(VIDEOS), "--size", "64",
            "--min-frames", "3", "--max-frames", "5", "--work-dir", str(work), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    obj = json.loads(out.read_text())
    assert [s["seed"] for s in obj["seeds"]] == list(SEEDS) and all(s["reused"] for s in obj["seeds"])
    for entry, result in zip(obj["seeds"], report.results):
        assert entry["metrics"]["nosplit"]["mAP"] == pytest.approx(result.metrics["nosplit"]["mAP"], abs=1e-4)
    shown = capsys.readouterr().out
    assert "mean" in shown and "spread" in shown and "nosplit" in shown
    assert main(argv) == 1  # --out exists: not overwritten without --force


def test_cli_refuses_the_training_seed_and_bad_frames(tmp_path, capsys):
    assert main(["eval-seeds", "--seeds", str(DEFAULT_SEED), "--work-dir", str(tmp_path)]) == 1
    assert "not unseen data" in capsys.readouterr().err
    assert main(["eval-seeds", "--seeds", "5", "--min-frames", "9", "--max-frames", "4", "--work-dir", str(tmp_path)]) == 1
    assert "min_frames" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing generated
