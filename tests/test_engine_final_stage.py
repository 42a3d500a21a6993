"""The final training stage at other input sides (`data.final_from`, FixRes-style): which clips
each step trains on, exact resume across the stage boundary, the time budget moving the
stage, the config checks and the real data set's final-stage transform."""

import json
import sys
from pathlib import Path

import pytest
import torch

from avis.engine.config import load_config
from avis.engine.distributed import DistInfo
from avis.engine.trainer import StopTraining
from avis.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_toys import ToyClips, toy_config, toy_trainer  # noqa: E402
from test_engine_train import FakeClock, params_of  # noqa: E402

SINGLE = DistInfo()


class Recorded(ToyClips):
    """Toy clips that note every dataset index they serve; `scale` changes the frames so that
    the two stages train on different inputs."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.served = scale, []

    def sample(self, index, epoch):
        self.served.append(index)
        clip = super().sample(index, epoch)
        clip.frames.mul_(self.scale)
        return clip


def staged_trainer(cfg, run_dir, first: Recorded, final: Recorded | None):
    return toy_trainer(cfg, run_dir, SINGLE, first, final_dataset=final)


def test_final_stage_trains_on_its_clips_from_final_from_on_in_the_same_order(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(iterations=10, checkpoint_every=100)
    plain = Recorded()
    plain_run = toy_trainer(cfg, tmp_path / "plain", SINGLE, plain)
    plain_run.train()

    cfg = toy_config(iterations=10, checkpoint_every=100)
    cfg.data.final_from, cfg.data.final_short_sides = 6, [64]
    first, final = Recorded(), Recorded(scale=0.5)
    staged = staged_trainer(cfg, tmp_path / "staged", first, final)
    staged.train()
    per_step = cfg.batch_size  # one process, no accumulation
    assert first.served == plain.served[: 6 * per_step]  # steps 0-5
    assert final.served == plain.served[6 * per_step :]  # steps 6-9: the order goes on
    # the second stage really trained on other inputs: the weights differ from the plain run
    plain_params = params_of(plain_run.module)
    assert any(
        not torch.equal(value, plain_params[name])
        for name, value in params_of(staged.module).items()
    )


def test_final_stage_has_its_own_repeat_factors_and_resumes_exactly(tmp_path):
    """`final_repeats` (`data.final_multi_instance_repeat`): the first stage keeps the plain
    order, the final stage shows each video its number of times per pass, and a run killed in
    the final stage resumes to the same weights."""
    torch.set_num_threads(1)
    repeats = [1, 3, 1, 1, 2, 1]  # 9 showings per pass over the 6 toy videos

    def config():
        cfg = toy_config(iterations=11, checkpoint_every=4)
        cfg.data.final_from, cfg.data.final_short_sides = 2, [64]
        return cfg

    plain = Recorded()
    toy_trainer(config(), tmp_path / "plain", SINGLE, plain, final_dataset=Recorded(0.5)).train()
    first, final = Recorded(), Recorded(0.5)
    straight = toy_trainer(
        config(), tmp_path / "straight", SINGLE, first, final_dataset=final, final_repeats=repeats
    )
    straight.train()
    per_step = config().batch_size
    assert first.served == plain.served[: 2 * per_step]  # steps 0-1: the plain order
    # steps 2-10 serve clip numbers 4-21; clips 9-17 are the final order's second whole pass
    assert len(final.served) == 18 and len(set(final.served)) == 18  # each its own clip
    shown = sorted(index % 6 for index in final.served[9 - 4 : 18 - 4])  # video = index % V
    assert shown == [v for v, n in enumerate(repeats) for _ in range(n)]

    killed = toy_trainer(
        config(), tmp_path / "killed", SINGLE, Recorded(), final_dataset=Recorded(0.5),
        final_repeats=repeats,
    )  # fmt: skip
    with pytest.raises(StopTraining):
        killed.train(stop_after=6)
    resumed_final = Recorded(0.5)
    resumed = toy_trainer(
        config(), tmp_path / "killed", SINGLE, Recorded(), final_dataset=resumed_final,
        final_repeats=repeats,
    )  # fmt: skip
    assert resumed.resume() and resumed.iteration == 4
    resumed.train()
    assert resumed_final.served == final.served[2 * per_step :]  # steps 4-10, the same clips
    expected, got = params_of(straight.module), params_of(resumed.module)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_final_stage_is_used_only_with_its_dataset():
    cfg = toy_config()
    cfg.data.final_from, cfg.data.final_short_sides = 3, [64]
    with pytest.raises(ValueError, match="final_dataset"):
        toy_trainer(cfg, Path("/nonexistent"), SINGLE)


def test_resume_across_the_stage_boundary_matches_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)

    def config():
        cfg = toy_config(iterations=10, checkpoint_every=4)
        cfg.data.final_from, cfg.data.final_short_sides = 6, [64]
        return cfg

    straight = staged_trainer(config(), tmp_path / "straight", Recorded(), Recorded(0.5))
    straight.train()
    killed = staged_trainer(config(), tmp_path / "killed", Recorded(), Recorded(0.5))
    with pytest.raises(StopTraining):
        killed.train(stop_after=7)  # in the final stage, past the checkpoint at 4
    first, final = Recorded(), Recorded(0.5)
    resumed = staged_trainer(config(), tmp_path / "killed", first, final)
    assert resumed.resume() and resumed.iteration == 4
    resumed.train()
    assert len(first.served) == 2 * 2 and len(final.served) == 4 * 2  # steps 4-5, then 6-9
    expected, got = params_of(straight.module), params_of(resumed.module)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_time_budget_moves_the_final_stage_earlier_and_the_log_repeats_the_run(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(iterations=20, checkpoint_every=100, max_minutes=10 / 60)
    cfg.data.final_from, cfg.data.final_short_sides = 16, [64]  # at 80 % of the iterations
    first, final = Recorded(), Recorded(0.5)
    budgeted = staged_trainer(cfg, tmp_path / "budget", first, final)
    budgeted.clock = FakeClock()  # iteration i ends i seconds into the 10-second budget
    budgeted.train()
    assert budgeted.iteration == 10
    assert cfg.data.final_from == 8  # 80 % of the budget was spent after iteration 8
    assert len(first.served) == 8 * 2 and len(final.served) == 2 * 2
    records = [json.loads(x) for x in (tmp_path / "budget/metrics.jsonl").read_text().splitlines()]
    budget = [r for r in records if r["kind"] == "budget"]
    assert budget[0]["final_from"] == 8

    # the logged values repeat it without a budget
    fixed = toy_config(iterations=10, checkpoint_every=100)
    fixed.data.final_from, fixed.data.final_short_sides = 8, [64]
    repeat = staged_trainer(fixed, tmp_path / "fixed", Recorded(), Recorded(0.5))
    repeat.train()
    expected, got = params_of(repeat.module), params_of(budgeted.module)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.final_from=10"], "needs data.final_short_sides"),
        (["data.final_from=-1"], "must be >= 0"),
        (["data.final_short_sides=[0]"], "must be >= 1"),
    ],
)
def test_final_stage_config_errors(overrides, message):
    with pytest.raises(DataError, match=message):
        load_config("avism_r50", None, overrides).validate()


def final_stage_datasets(synth_root, *overrides: str):
    """(config, training clips at 48 px, final-stage clips at 64 px from step 5) of the tiny
    preset on the synthetic set, with further `key=value` overrides."""
    from avis.engine.build import build_final_stage_dataset, build_train_dataset

    cfg = load_config(
        "avism_tiny", None,
        [f"data.root={synth_root}", "data.short_sides=[48]", "data.max_size=96",
         "data.final_short_sides=[64]", "data.final_from=5", *overrides],
    )  # fmt: skip
    dataset, _ = build_train_dataset(cfg)
    return cfg, dataset, build_final_stage_dataset(cfg, dataset)


def test_final_stage_dataset_resizes_the_same_clips(synth_root):
    from avis.engine.build import build_final_stage_dataset

    cfg, dataset, final = final_stage_datasets(synth_root, "data.flip_prob=0.5")
    for index in range(4):
        clip, big = dataset.sample(index, 0), final.sample(index, 0)
        assert clip.frames.shape[-2:] == (48, 48) and big.frames.shape[-2:] == (64, 64)
        assert big.masks.shape[-2:] == (64, 64)
        assert torch.equal(clip.frame_indices, big.frame_indices)  # same frames, same draws
        assert torch.equal(clip.track_ids, big.track_ids)
        small = torch.nn.functional.interpolate(big.frames, size=(48, 48), mode="area")
        assert (small - clip.frames).abs().mean() < 12  # same picture (and the same flip)
    cfg.data.final_from = 0
    assert build_final_stage_dataset(cfg, dataset) is None


def test_final_stage_can_take_longer_clips(synth_root):
    _, dataset, final = final_stage_datasets(synth_root, "data.clip_frames=2", "data.final_clip_frames=4")
    for index in range(3):
        clip, long = dataset.sample(index, 0), final.sample(index, 0)
        assert clip.frames.shape[:2] == (2, 3) and long.frames.shape[:2] == (4, 3)
        assert long.masks.shape[1] == 4 and long.frames.shape[-2:] == (64, 64)
        assert len(set(long.frame_indices.tolist())) == 4  # four different frames
    with pytest.raises(DataError, match="final_clip_frames must be >= 0"):
        load_config("avism_tiny", None, ["data.final_clip_frames=-1"])
