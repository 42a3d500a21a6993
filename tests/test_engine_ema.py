"""The weight average of training (`ema_decay`, `ema_from`; avis.engine.ema): its arithmetic,
what the final model and the evaluation get, exact resume, the time budget moving its start,
and the config checks."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from avis.engine.checkpoint import list_checkpoints
from avis.engine.config import load_config
from avis.engine.distributed import DistInfo
from avis.engine.ema import WeightAverage
from avis.engine.trainer import FINAL_MODEL_FILE, StopTraining
from avis.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_toys import toy_config, toy_trainer  # noqa: E402
from test_engine_train import FakeClock, params_of  # noqa: E402

SINGLE = DistInfo()


class WithCounter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_average_starts_at_its_step_then_follows_the_decay_and_copies_integer_buffers():
    module, average = WithCounter(), WeightAverage(0.75, start=2)
    history = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5.0, 6.0, 7.0]), torch.tensor([9.0, 2.0, 1.0])]
    for step, value in enumerate(history, start=1):
        with torch.no_grad():
            module.weight.copy_(value)
        module.count.fill_(step)
        average.update(module, step)
        if step == 1:
            assert not average.active  # before its start
    state = average.state_dict()
    expected = 0.75 * history[1] + 0.25 * history[2]  # starts as the weights after step 2
    assert torch.allclose(state["weight"], expected)
    assert int(state["count"]) == 3
    with average.applied(module):
        assert torch.allclose(module.weight, expected)
    assert torch.equal(module.weight.detach(), history[2])  # the raw weights come back


def test_average_refuses_a_decay_outside_the_open_unit_interval_and_foreign_keys():
    with pytest.raises(ValueError):
        WeightAverage(1.0, 0)
    average = WeightAverage(0.5, 0)
    with pytest.raises(KeyError, match="does not fit"):
        average.load_state_dict({"other": torch.zeros(1)}, WithCounter())


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / FINAL_MODEL_FILE, weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def ema_config(**overrides):
    cfg = toy_config(**{"iterations": 12, "checkpoint_every": 1, "keep_last": 100, **overrides})
    cfg.ema_decay, cfg.ema_from = 0.8, 6
    return cfg


def test_final_model_holds_the_average_of_the_raw_weights_after_each_step(tmp_path):
    torch.set_num_threads(1)
    trainer = toy_trainer(ema_config(), tmp_path, SINGLE)
    trainer.train()
    raw = {i: torch.load(p, weights_only=True)["model"] for i, p in list_checkpoints(tmp_path)}
    assert sorted(raw) == list(range(1, 13))
    expected = {k: v.clone() for k, v in raw[6].items()}
    for step in range(7, 13):
        for key, value in raw[step].items():
            if value.is_floating_point():
                expected[key] = 0.8 * expected[key] + 0.2 * value
    final = final_weights(tmp_path)
    differs = False
    for key, value in expected.items():
        assert torch.allclose(final[key], value, atol=1e-6), key
        differs |= not torch.allclose(final[key], raw[12][key])
    assert differs  # the average is not the last step's weights
    # the training continues from the raw weights: the module holds them after training
    for key, value in params_of(trainer.module).items():
        assert torch.equal(value, raw[12][key]), key


def test_the_evaluation_scores_the_average(tmp_path):
    torch.set_num_threads(1)
    cfg = ema_config(eval_every=0)
    seen = {}

    def evaluate(module):
        seen.update(params_of(module))
        return {"score": 1.0}

    trainer = toy_trainer(cfg, tmp_path, SINGLE, evaluate=evaluate)
    trainer.train()
    assert_same_weights(seen, final_weights(tmp_path))


def test_resume_continues_the_average_exactly(tmp_path):
    torch.set_num_threads(1)
    straight = toy_trainer(ema_config(checkpoint_every=4), tmp_path / "straight", SINGLE)
    straight.train()
    killed = toy_trainer(ema_config(checkpoint_every=4), tmp_path / "killed", SINGLE)
    with pytest.raises(StopTraining):
        killed.train(stop_after=10)  # past the checkpoint at 8, inside the average
    resumed = toy_trainer(ema_config(checkpoint_every=4), tmp_path / "killed", SINGLE)
    assert resumed.resume() and resumed.iteration == 8
    resumed.train()
    assert_same_weights(final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed"))


def test_time_budget_moves_the_start_of_the_average_and_the_log_repeats_the_run(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(iterations=20, checkpoint_every=100, max_minutes=10 / 60)
    cfg.ema_decay, cfg.ema_from = 0.8, 16  # at 80 % of the iterations
    budgeted = toy_trainer(cfg, tmp_path / "budget", SINGLE)
    budgeted.clock = FakeClock()  # iteration i ends i seconds into the 10-second budget
    budgeted.train()
    assert budgeted.iteration == 10 and cfg.ema_from == 8
    records = [json.loads(x) for x in (tmp_path / "budget/metrics.jsonl").read_text().splitlines()]
    assert [r["ema_from"] for r in records if r["kind"] == "budget"] == [8]

    fixed = toy_config(iterations=10, checkpoint_every=100)
    fixed.ema_decay, fixed.ema_from = 0.8, 8
    repeat = toy_trainer(fixed, tmp_path / "fixed", SINGLE)
    repeat.train()
    assert_same_weights(final_weights(tmp_path / "budget"), final_weights(tmp_path / "fixed"))


def test_without_an_average_the_final_model_is_the_last_step(tmp_path):
    torch.set_num_threads(1)
    trainer = toy_trainer(toy_config(iterations=6, checkpoint_every=100), tmp_path, SINGLE)
    trainer.train()
    assert_same_weights(final_weights(tmp_path), params_of(trainer.module))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["ema_decay=1"], "ema_decay must be in"), (["ema_decay=-0.1"], "ema_decay must be in"),
     (["ema_from=-1"], "ema_from must be >= 0")],
)
def test_weight_average_config_errors(overrides, message):
    with pytest.raises(DataError, match=message):
        load_config("avism_tiny", None, overrides)
