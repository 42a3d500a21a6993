"""Engine: smoke run, exact kill-and-resume, DDP equivalence, optimiser groups, schedule, config."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avis.engine.checkpoint import list_checkpoints
from avis.engine.config import OptimConfig, load_config, parse_override
from avis.engine.data import ClipOrder, micro_batch_clips
from avis.engine.distributed import DistInfo
from avis.engine.optim import lr_factor, param_groups
from avis.engine.trainer import StopTraining
from avis.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_toys import ToyAVISM, toy_config, toy_trainer  # noqa: E402

SINGLE = DistInfo()


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_smoke_run_learns_and_writes_the_run_folder(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(iterations=30, checkpoint_every=10, keep_last=2)
    trainer = toy_trainer(cfg, tmp_path, SINGLE)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    assert [it for it, _ in list_checkpoints(tmp_path)] == [20, 30]
    for name in ("config.yaml", "curves.png", "model_final.pth"):
        assert (tmp_path / name).is_file(), name
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["format"] == "avis" and set(final["model"]) == set(trainer.module.state_dict())


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(iterations=8, checkpoint_every=4)
    straight = toy_trainer(cfg, tmp_path / "straight", SINGLE)
    straight.train()

    killed = toy_trainer(cfg, tmp_path / "killed", SINGLE)
    with pytest.raises(StopTraining):
        killed.train(stop_after=6)  # two steps past the checkpoint at 4 are lost
    resumed = toy_trainer(cfg, tmp_path / "killed", SINGLE)
    assert resumed.resume() and resumed.iteration == 4
    resumed.train()
    expected, got = params_of(straight.module), params_of(resumed.module)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    iterations = [
        json.loads(x)["iteration"]
        for x in (tmp_path / "killed/metrics.jsonl").read_text().splitlines()
    ]
    assert iterations == sorted(iterations) and len(iterations) == len(set(iterations))


def test_two_process_ddp_matches_single_process(tmp_path):
    iterations = 4
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    toys = Path(__file__).parent / "test_engine_toys.py"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(toys), "--run-dir", str(ddp_dir), "--iterations", str(iterations),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = torch.load(ddp_dir / "params_rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_dir / "params_rank1.pt", weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name

    from test_engine_toys import ToyClips

    torch.set_num_threads(1)
    cfg = toy_config(iterations=iterations, checkpoint_every=100)
    single = toy_trainer(cfg, tmp_path / "single", SINGLE, ToyClips(always_sounding=True))
    single.train()
    start = ToyAVISM()
    moved = 0.0
    for name, value in single.module.state_dict().items():
        assert torch.allclose(rank0[name], value, atol=1e-5, rtol=1e-4), name
        moved += float((value - start.state_dict()[name]).abs().sum())
    assert moved > 0


def test_global_batch_layout_is_the_same_for_any_process_count():
    single = [k for a in range(2) for k in micro_batch_clips(3, a, 8, 2, SINGLE)]
    sharded = [
        k
        for a in range(2)
        for r in range(2)
        for k in micro_batch_clips(3, a, 8, 2, DistInfo(rank=r, world_size=2))
    ]
    assert sorted(single) == sorted(sharded) == list(range(24, 32))
    order = ClipOrder(5, seed=1)
    first_pass = sorted(order(k) for k in range(5))
    assert first_pass == list(range(5))
    assert sorted(order(k) % 5 for k in range(5, 10)) == list(range(5))


def test_repeat_factor_order_shows_each_video_its_number_of_times():
    repeats = [1, 3, 1, 2]
    order = ClipOrder(4, seed=2, repeats=repeats)
    assert order.pass_length == 7
    for epoch in range(3):
        indices = [order(k) for k in range(7 * epoch, 7 * (epoch + 1))]
        assert sorted(i % 4 for i in indices) == [0, 1, 1, 1, 2, 3, 3]  # video = index % V
    all_indices = [order(k) for k in range(21)]
    assert len(set(all_indices)) == 21  # every showing draws its own clip
    # all ones = the plain order, unchanged
    plain, ones = ClipOrder(4, seed=2), ClipOrder(4, seed=2, repeats=[1, 1, 1, 1])
    assert [plain(k) for k in range(12)] == [ones(k) for k in range(12)]
    with pytest.raises(ValueError):
        ClipOrder(4, seed=2, repeats=[1, 0, 1, 1])


def test_multi_instance_repeat_picks_videos_with_two_instances_of_a_class():
    from types import SimpleNamespace

    from avis.engine.build import video_repeats

    def track(cat):
        return SimpleNamespace(category_id=cat)

    split = SimpleNamespace(
        videos=[SimpleNamespace(id=i) for i in (10, 11, 12)],
        tracks={10: [track(1), track(2)], 11: [track(3), track(3)], 12: [track(4)]},
    )
    assert video_repeats(split, 1) is None
    assert video_repeats(split, 3) == [1, 3, 1]
    # fractional factors: p showings of a twin video against q of every other one
    assert video_repeats(split, 1.5) == [2, 3, 2]
    assert video_repeats(split, 1.25) == [4, 5, 4]
    with pytest.raises(DataError):
        video_repeats(split, 0)
    with pytest.raises(DataError, match="fraction"):
        video_repeats(split, 1.01)  # would need a denominator of 100
    with pytest.raises(DataError):
        video_repeats(split, float("nan"))


def test_final_multi_instance_repeat_needs_a_final_stage():
    from avis.engine.config import load_config

    with pytest.raises(DataError, match="final stage"):
        load_config(
            "avism_tiny", overrides=["data.final_from=0", "data.final_multi_instance_repeat=2"]
        ).validate()
    cfg = load_config(
        "avism_tiny",
        overrides=["data.multi_instance_repeat=1.5", "data.final_multi_instance_repeat=2"],
    )
    cfg.validate()
    assert (cfg.data.multi_instance_repeat, cfg.data.final_multi_instance_repeat) == (1.5, 2.0)
    # a bad factor is refused by the config check, naming its key, before any training starts
    for override, key in (
        ("data.final_multi_instance_repeat=0.5", "final_multi_instance_repeat"),
        ("data.final_multi_instance_repeat=1.01", "final_multi_instance_repeat"),
        ("data.multi_instance_repeat=0.5", "data.multi_instance_repeat"),
    ):
        with pytest.raises(DataError, match=key):
            load_config("avism_tiny", overrides=[override]).validate()


BAD_VALUES = [
    # (override, key named in the error); each of these used to crash inside the run (an
    # "internal error") or train silently with a meaningless value
    ("checkpoint_every=0", "log_every and checkpoint_every"),
    ("log_every=0", "log_every and checkpoint_every"),
    ("data.clip_frames=0", "data.clip_frames"),
    ("data.frame_range=-1", "data.frame_range"),
    ("data.short_sides=[]", "data.short_sides"),
    ("data.short_sides=[0]", "data.short_sides"),
    ("data.max_size=-5", "data.max_size"),
    ("data.crop_prob=2", "data.crop_prob"),
    ("data.flip_prob=-1", "data.flip_prob"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.audio_policy=bogus", "data.audio_policy"),
    ("data.eval_max_videos=-1", "data.eval_max_videos"),
    ("data.twin_paste_prob=2", "data.twin_paste_prob"),
    ("data.occlude_prob=-0.1", "data.occlude_prob"),
    ("data.frame_flip_prob=1.5", "data.frame_flip_prob"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=inf", "optim.lr"),
    ("optim.warmup_iters=-1", "optim.warmup_iters"),
    ("optim.warmup_factor=0", "optim.warmup_factor"),
    ("optim.decay_gamma=-1", "optim.decay_gamma"),
    ("optim.betas=[2,2]", "optim.betas"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.clip_grad_norm=-1", "optim.clip_grad_norm"),
    ("optim.decay_steps=[-5]", "optim.decay_steps"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("loss.no_object_weight=0", "loss.no_object_weight"),
    ("loss.num_points=0", "loss.num_points"),
    ("loss.mask_weight=-1", "loss.mask_weight"),
    ("loss.class_weight=nan", "loss.class_weight"),
    ("loss.importance_sample_ratio=2", "loss.importance_sample_ratio"),
    ("loss.oversample_ratio=0.5", "loss.oversample_ratio"),
    ("loss.cross_frame_weight=-1", "loss.cross_frame_weight"),
    ("seed=-1", "seed"),
    ("threads=-1", "threads"),
    ("keep_last=0", "keep_last"),
    ("max_minutes=nan", "max_minutes"),
    ("dist_timeout_minutes=nan", "dist_timeout_minutes"),
]


@pytest.mark.parametrize("override,key", BAD_VALUES)
def test_values_out_of_range_are_refused_before_training(override, key):
    from avis.engine.config import load_config

    with pytest.raises(DataError, match=key.replace(".", r"\.")):
        load_config("avism_tiny", overrides=[override]).validate()


def test_every_shipped_preset_and_edge_values_pass_the_range_check():
    from avis.engine.config import TRAIN_PRESETS, load_config

    for preset in TRAIN_PRESETS:
        load_config(preset).validate()
    edges = ["checkpoint_every=100000", "data.frame_range=0", "data.crop_prob=1", "optim.betas=[0,0.5]",
             "optim.clip_grad_norm=0", "loss.num_points=null", "loss.frame_no_object_weight=null",
             "max_minutes=0", "threads=0", "seed=0", "optim.warmup_factor=1"]  # fmt: skip
    load_config("avism_tiny", overrides=edges).validate()


def test_param_groups_backbone_multiplier_and_no_decay():
    model = ToyAVISM()
    cfg = OptimConfig(lr=1e-3, weight_decay=0.05, backbone_lr_mult=0.1)
    groups = param_groups(model, cfg)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert len(by_param) == sum(1 for _ in model.parameters())
    names = dict(model.named_parameters())
    assert by_param[id(names["backbone.0.weight"])]["lr"] == pytest.approx(1e-4)
    assert by_param[id(names["backbone.0.weight"])]["weight_decay"] == 0.05
    assert by_param[id(names["backbone.1.weight"])]["weight_decay"] == 0.0  # GroupNorm
    assert by_param[id(names["norm.weight"])]["weight_decay"] == 0.0
    assert by_param[id(names["query_feat.weight"])]["weight_decay"] == 0.0
    assert by_param[id(names["class_embed.weight"])]["lr"] == pytest.approx(1e-3)


def test_warmup_and_step_schedule():
    cfg = OptimConfig(warmup_iters=10, warmup_factor=0.1, decay_steps=[20, 30], decay_gamma=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == 1.0 and lr_factor(19, cfg) == 1.0
    assert lr_factor(20, cfg) == pytest.approx(0.1) and lr_factor(30, cfg) == pytest.approx(0.01)


def test_config_preset_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("iterations: 50\noptim:\n  lr: 1e-3\nmodel:\n  frame_queries: 7\n")
    cfg = load_config(
        "avism_tiny", path, ["optim.lr=2e-4", "loss.num_points=null", "data.short_sides=[32,64]"]
    )
    assert cfg.iterations == 50 and cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.model["frame_queries"] == 7 and cfg.model["audio_mask_bias"] is True
    assert cfg.loss.num_points is None
    assert cfg.data.short_sides == [32, 64]
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    with pytest.raises(DataError, match="unknown key"):
        load_config("avism_tiny", None, ["optim.learning_rate=1"])
    with pytest.raises(DataError, match="expected an integer"):
        load_config("avism_tiny", None, ["iterations=many"])


@pytest.mark.parametrize(
    "text,match",
    [
        ("model: 5\n", "model must be a mapping"),  # was an internal error (TypeError)
        ("iterations: 2.5\n", "iterations: expected an integer"),  # was truncated to 2
        ("iterations: true\n", "iterations: expected an integer"),  # was 1
        ("tensorboard: 2\n", "tensorboard: expected true or false"),  # was True
        ("optim: {lr: yes}\n", "optim.lr: expected a number"),
        ("data: {short_sides: [160, abc]}\n", r"short_sides\[1\]: expected an integer"),
    ],
)
def test_config_file_values_of_the_wrong_kind_are_refused(tmp_path, text, match):
    from avis.engine.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_config("avism_tiny", path)


def test_config_file_numbers_yaml_reads_as_text_and_unreadable_files(tmp_path):
    from avis.engine.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("iterations: 1e3\noptim: {lr: 1e-4}\ndata: {short_sides: [1.6e2]}\n")
    cfg = load_config("avism_tiny", path)  # YAML 1.1 reads 1e3 and 1e-4 as strings
    assert (cfg.iterations, cfg.optim.lr, cfg.data.short_sides) == (1000, 1e-4, [160])
    path.write_bytes(b"\xff\xfe\x00 not text")  # was an internal error (UnicodeDecodeError)
    with pytest.raises(DataError, match="cannot read the training config"):
        load_config("avism_tiny", path)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    from test_engine_toys import ToyClips

    torch.set_num_threads(1)
    results = []
    for accumulation in (1, 2):
        cfg = toy_config(iterations=3, accumulation=accumulation, checkpoint_every=100)
        trainer = toy_trainer(
            cfg, tmp_path / str(accumulation), SINGLE, ToyClips(always_sounding=True)
        )
        trainer.train()
        results.append(params_of(trainer.module))
    for name in results[0]:
        assert torch.allclose(results[0][name], results[1][name], atol=1e-5, rtol=1e-4), name


def test_bf16_autocast_on_cpu_trains(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(iterations=4, amp="bf16", checkpoint_every=100)
    trainer = toy_trainer(cfg, tmp_path, SINGLE)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_precision_option_trains_and_sets_the_autocast(tmp_path, precision):
    from avis.engine.trainer import training_precision

    torch.set_num_threads(1)
    cfg = toy_config(iterations=2, precision=precision, checkpoint_every=100)
    trainer = toy_trainer(cfg, tmp_path, SINGLE)
    assert trainer.precision == precision and trainer.scaler is None  # no scaler on CPU
    with trainer.autocast():
        out = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
    expected = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    assert out.dtype == expected
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([r["loss"] for r in records if r["kind"] == "train"])))
    # "auto": the amp setting when given, else the device's default
    assert training_precision(toy_config(amp="bf16"), torch.device("cpu")) == "bf16"
    assert training_precision(toy_config(), torch.device("cpu")) == "fp32"
    assert training_precision(toy_config(), torch.device("cuda")) == "bf16"
    with pytest.raises(DataError, match="precision"):
        toy_config(precision="half").validate()


class FakeClock:
    """One second passes per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_time_budget_stops_the_run_and_moves_the_decay_earlier(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(iterations=20, checkpoint_every=100, max_minutes=10 / 60)
    cfg.optim.decay_steps = [16]  # at 80 % of the iterations
    budgeted = toy_trainer(cfg, tmp_path / "budget", SINGLE)
    budgeted.clock = FakeClock()  # iteration i ends i seconds into the 10-second budget
    budgeted.train()
    assert budgeted.iteration == 10  # stopped when the budget was spent
    assert cfg.optim.decay_steps == [9]  # 80 % of the budget reached at iteration 8
    assert (tmp_path / "budget/model_final.pth").is_file()
    assert [it for it, _ in list_checkpoints(tmp_path / "budget")] == [10]
    records = [json.loads(x) for x in (tmp_path / "budget/metrics.jsonl").read_text().splitlines()]
    budget = [r for r in records if r["kind"] == "budget"]
    assert len(budget) == 1 and budget[0]["iteration"] == 10 and budget[0]["decay_steps"] == [9]
    lrs = {r["iteration"]: r["lr"] for r in records if r["kind"] == "train"}
    assert lrs[10] == pytest.approx(lrs[8] * cfg.optim.decay_gamma)

    # the logged iteration count and decay steps repeat the run exactly, without a budget
    fixed = toy_config(iterations=10, checkpoint_every=100)
    fixed.optim.decay_steps = [9]
    repeat = toy_trainer(fixed, tmp_path / "fixed", SINGLE)
    repeat.train()
    expected, got = params_of(repeat.module), params_of(budgeted.module)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    # resuming a run whose budget is spent does not train further
    again = toy_trainer(cfg, tmp_path / "budget", SINGLE)
    assert again.resume() and again.elapsed_before >= 10
    again.train()
    assert again.iteration == 10


def test_anchor_cost_reaches_the_matcher():
    from avis.engine.build import build_criterion

    cfg = load_config("avism_tiny", None, ["loss.anchor_cost=0.5"])
    assert build_criterion(cfg, 8).matcher.anchor_cost == 0.5
    assert build_criterion(load_config("avism_tiny", None, []), 8).matcher.anchor_cost == 0.0


def test_frame_no_object_weight_reaches_the_criterion():
    from avis.engine.build import build_criterion

    cfg = load_config("avism_tiny", None, ["loss.frame_no_object_weight=0.1"])
    criterion = build_criterion(cfg, 8)
    assert float(criterion.frame_class_weights[-1]) == pytest.approx(0.1)
    assert float(criterion.class_weights[-1]) == pytest.approx(0.5)  # the recipe's video level
    plain = build_criterion(load_config("avism_tiny", None, []), 8)
    assert torch.equal(plain.frame_class_weights, plain.class_weights)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_config_files_load_and_build_their_model_config(path):
    from avis.engine.build import model_config

    preset = "avism_r50" if "r50" in path.name else "avism_tiny"
    cfg = load_config(preset, path)
    model_cfg = model_config(cfg, num_classes=3, audio_dim=128)
    if "_v2" in path.name:  # the benchmark-v2 recipes read where the sound is
        assert model_cfg.spatial_audio and model_cfg.spatial_audio_keys
    if cfg.data.final_from > 0:  # a final stage trains at the side the model is tested at
        assert cfg.data.final_short_sides == [model_cfg.test_short_side]
        assert cfg.data.final_max_size == model_cfg.test_max_size
    if "gpu" in path.name:
        assert cfg.precision == "bf16" and cfg.processes == 1
