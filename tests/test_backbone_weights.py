"""Backbone weight loaders: torchvision .pth, detectron2 .pkl (Caffe2 and d2 names), Swin .pth.

Every file is written here with random values; the expected names are spelled out
independently of the loaders' renaming code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from avis.errors import CheckpointError
from avis.models.backbones import ResNet, SwinTransformer
from avis.models.backbones.weights import (
    caffe2_resnet_name,
    load_backbone_weights,
    load_detectron2_pkl,
    load_swin,
    load_torchvision_resnet,
    torchvision_resnet_name,
)
from avis.models.backbones.weights_pickle import read_weights_pickle

BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
FULL_WIDTH = 64  # stem width of the real networks
NARROW_WIDTH = 16  # files written in the tests use a narrow ResNet-18 (same names)
NARROW_SWIN = {"embed_dim": 24, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 3, 4), "window_size": 12}


def torchvision_shapes(depth: int, base: int = NARROW_WIDTH) -> dict[str, tuple[int, ...]]:
    """The torchvision resnet{depth} state-dict layout, written from its definition."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (base, 3, 7, 7)}

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    batch_norm("bn1", base)
    inplanes, bottleneck = base, depth >= 50
    widths = [base * 2**i for i in range(4)]
    for layer, (count, planes) in enumerate(zip(BLOCKS[depth], widths), start=1):
        out = planes * 4 if bottleneck else planes
        for block in range(count):
            prefix = f"layer{layer}.{block}"
            convs = (
                [(planes, inplanes, 1), (planes, planes, 3), (out, planes, 1)]
                if bottleneck
                else [(planes, inplanes, 3), (planes, planes, 3)]
            )
            for j, (o, i, k) in enumerate(convs, start=1):
                shapes[f"{prefix}.conv{j}.weight"] = (o, i, k, k)
                batch_norm(f"{prefix}.bn{j}", o)
            if block == 0 and inplanes != out:
                shapes[f"{prefix}.downsample.0.weight"] = (out, inplanes, 1, 1)
                batch_norm(f"{prefix}.downsample.1", out)
            inplanes = out
    shapes["fc.weight"], shapes["fc.bias"] = (1000, inplanes), (1000,)
    return shapes


def caffe2_shapes(depth: int, base: int = NARROW_WIDTH) -> dict[str, tuple[int, ...]]:
    """MSRA/Caffe2 ResNet blob names (affine-only BN: ``_bn_s`` scale, ``_bn_b`` bias)."""
    shapes: dict[str, tuple[int, ...]] = {
        "conv1_w": (base, 3, 7, 7), "res_conv1_bn_s": (base,), "res_conv1_bn_b": (base,),
    }
    inplanes, bottleneck = base, depth >= 50
    widths = [base * 2**i for i in range(4)]
    for stage, (count, planes) in enumerate(zip(BLOCKS[depth], widths), start=2):
        out = planes * 4 if bottleneck else planes
        for block in range(count):
            branches = (
                [("2a", planes, inplanes, 1), ("2b", planes, planes, 3), ("2c", out, planes, 1)]
                if bottleneck
                else [("2a", planes, inplanes, 3), ("2b", planes, planes, 3)]
            )
            if block == 0 and inplanes != out:
                branches.append(("1", out, inplanes, 1))
            for branch, o, i, k in branches:
                prefix = f"res{stage}_{block}_branch{branch}"
                shapes[f"{prefix}_w"] = (o, i, k, k)
                shapes[f"{prefix}_bn_s"] = shapes[f"{prefix}_bn_b"] = (o,)
            inplanes = out
    shapes["fc1000_w"], shapes["fc1000_b"] = (1000, inplanes), (1000,)
    return shapes


def random_arrays(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: (np.zeros(shape, np.int64) if name.endswith("num_batches_tracked")
               else rng.standard_normal(shape).astype(np.float32) + 2.0)
        for name, shape in shapes.items()
    }


@pytest.mark.parametrize(("depth", "shapes"), [(50, torchvision_shapes), (50, caffe2_shapes)])
def test_resnet50_file_names_cover_the_model(depth: int, shapes) -> None:
    rename = torchvision_resnet_name if shapes is torchvision_shapes else caffe2_resnet_name
    expected = ResNet(depth).state_dict()
    mapped = {}
    for name, shape in shapes(depth, FULL_WIDTH).items():
        new_name = rename(name)
        if new_name is not None and not new_name.endswith("num_batches_tracked"):
            mapped[new_name] = shape
    if shapes is caffe2_shapes:  # no running statistics in Caffe2 files
        expected = {k: v for k, v in expected.items() if not k.endswith(("_mean", "_var"))}
    assert mapped == {name: tuple(value.shape) for name, value in expected.items()}


def test_torchvision_resnet_loads_every_tensor_by_name(tmp_path: Path) -> None:
    arrays = random_arrays(torchvision_shapes(18))
    path = tmp_path / "resnet18.pth"
    torch.save({name: torch.from_numpy(value) for name, value in arrays.items()}, path)
    model = ResNet(18, stem_channels=NARROW_WIDTH)
    report = load_torchvision_resnet(model, path)
    state = model.state_dict()
    for file_name, model_name in [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer1.0.bn2.weight", "res2.0.conv2.norm.weight"),
        ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
        ("layer2.0.downsample.1.running_mean", "res3.0.shortcut.norm.running_mean"),
        ("layer4.1.conv2.weight", "res5.1.conv2.weight"),
    ]:
        assert torch.equal(state[model_name], torch.from_numpy(arrays[file_name])), model_name
    assert set(report.loaded) == set(state) and not report.kept_init
    assert {"fc.weight", "fc.bias", "bn1.num_batches_tracked"} <= set(report.ignored)
    # a trainable-BN model takes the batch counters too
    bn_report = load_torchvision_resnet(ResNet(18, norm="BN", stem_channels=NARROW_WIDTH), path)
    assert "stem.conv1.norm.num_batches_tracked" in bn_report.loaded


def test_strict_errors_name_the_problem_and_leave_the_model_untouched(tmp_path: Path) -> None:
    arrays = random_arrays(torchvision_shapes(18))
    del arrays["layer3.1.bn1.bias"]
    arrays["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    arrays["layer1.0.conv1.weight"] = np.zeros((16, 16, 1, 1), np.float32)
    path = tmp_path / "broken.pth"
    torch.save({name: torch.from_numpy(value) for name, value in arrays.items()}, path)
    model = ResNet(18, stem_channels=NARROW_WIDTH)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_torchvision_resnet(model, path)
    message = str(error.value)
    assert str(path) in message
    assert "res4.1.conv1.norm.bias" in message  # missing
    assert "layer9.0.conv1.weight" in message  # unexpected, named as in the file
    assert "(16, 16, 1, 1)" in message and "(16, 16, 3, 3)" in message  # shape mismatch
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(CheckpointError, match="not found"):
        load_torchvision_resnet(model, tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="norm"):  # GN has no running statistics
        load_torchvision_resnet(ResNet(18, norm="GN", stem_channels=NARROW_WIDTH), tmp_path / "broken.pth")


@pytest.mark.parametrize("layout", ["flat", "blobs", "numpy1"])
def test_caffe2_pkl_loads_with_identity_statistics(tmp_path: Path, layout: str) -> None:
    arrays = random_arrays(caffe2_shapes(18))
    content = dict(arrays, conv1_w_momentum=np.zeros((NARROW_WIDTH, 3, 7, 7), np.float32))
    data = {"blobs": content} if layout == "blobs" else content
    raw = pickle.dumps(data, protocol=2)
    if layout == "numpy1":  # the module path numpy 1.x (and Python 2 era files) wrote
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "R-18.pkl"
    path.write_bytes(raw)
    model = ResNet(18, stem_channels=NARROW_WIDTH)
    report = load_detectron2_pkl(model, path)
    state = model.state_dict()
    assert torch.equal(state["stem.conv1.weight"], torch.from_numpy(arrays["conv1_w"]))
    assert torch.equal(state["stem.conv1.norm.weight"], torch.from_numpy(arrays["res_conv1_bn_s"]))
    assert torch.equal(state["stem.conv1.norm.bias"], torch.from_numpy(arrays["res_conv1_bn_b"]))
    assert torch.equal(
        state["res3.0.shortcut.norm.weight"], torch.from_numpy(arrays["res3_0_branch1_bn_s"])
    )
    assert torch.equal(state["res5.1.conv2.weight"], torch.from_numpy(arrays["res5_1_branch2b_w"]))
    assert torch.equal(state["res4.0.conv1.norm.running_mean"], torch.zeros(4 * NARROW_WIDTH))
    assert torch.equal(state["res4.0.conv1.norm.running_var"], torch.ones(4 * NARROW_WIDTH))
    assert {"fc1000_w", "fc1000_b", "conv1_w_momentum"} <= set(report.ignored)
    assert any("stride" in note for note in report.notes)


def test_detectron2_named_pkl_from_torchvision(tmp_path: Path) -> None:
    arrays = random_arrays(torchvision_shapes(18), seed=3)
    renamed = {  # what detectron2's convert-torchvision-to-d2 writes
        "stem.conv1.weight": arrays["conv1.weight"],
        "stem.fc.weight": arrays["fc.weight"],
        "stem.fc.bias": arrays["fc.bias"],
    }
    model = ResNet(18, stem_channels=NARROW_WIDTH)
    for name, value in model.state_dict().items():
        if name != "stem.conv1.weight":
            renamed[name] = np.random.default_rng(len(name)).standard_normal(
                tuple(value.shape)).astype(np.float32)
    path = tmp_path / "R-18-torchvision.pkl"
    with path.open("wb") as file:
        pickle.dump({"model": renamed, "__author__": "torchvision", "matching_heuristics": True}, file)
    report = load_backbone_weights(model, path)
    for name, value in model.state_dict().items():
        assert torch.equal(value, torch.from_numpy(renamed[name])), name
    assert set(report.ignored) == {"stem.fc.weight", "stem.fc.bias"}


def official_swin_state(window_size: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    reference = SwinTransformer(**{**NARROW_SWIN, "window_size": window_size})
    state = {
        name: torch.randn(value.shape, generator=generator) if value.is_floating_point()
        else torch.randint(0, 5, value.shape, generator=generator)
        for name, value in reference.state_dict().items()
        if not name.startswith("norm")  # ImageNet files have no per-stage output norms
    }
    state["norm.weight"] = state["norm.bias"] = torch.ones(192)  # final classifier norm
    state["head.weight"], state["head.bias"] = torch.randn(1000, 192), torch.randn(1000)
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 144, 144)
    return state


def test_official_swin_pth_loads(tmp_path: Path) -> None:
    state = official_swin_state()
    path = tmp_path / "swin.pth"
    torch.save({"model": state}, path)
    model = SwinTransformer(**NARROW_SWIN)
    fresh_index = model.layers[0].blocks[0].attn.relative_position_index.clone()
    report = load_swin(model, path)
    loaded = model.state_dict()
    for name, value in state.items():
        if name in loaded and not name.endswith("relative_position_index"):
            assert torch.equal(loaded[name], value), name
    assert torch.equal(loaded["layers.0.blocks.0.attn.relative_position_index"], fresh_index)
    assert torch.equal(loaded["norm2.weight"], torch.ones(96))  # per-stage norms keep init
    assert {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")} <= set(report.kept_init)
    assert {"head.weight", "norm.bias", "layers.0.blocks.1.attn_mask"} <= set(report.ignored)


def test_swin_window_mismatch_and_converted_pkl(tmp_path: Path) -> None:
    path = tmp_path / "swin_window7.pth"
    torch.save({"model": official_swin_state(window_size=7)}, path)
    with pytest.raises(CheckpointError, match="relative_position_bias_table"):
        load_swin(SwinTransformer(**NARROW_SWIN), path)
    # Mask2Former's converter pickles the torch tensors of the official file
    pkl_path = tmp_path / "swin.pkl"
    state = official_swin_state()
    with pkl_path.open("wb") as file:
        pickle.dump({"model": state, "__author__": "third_party", "matching_heuristics": True}, file)
    model = SwinTransformer(**NARROW_SWIN)
    load_backbone_weights(model, pkl_path)
    assert torch.equal(model.patch_embed.proj.weight, state["patch_embed.proj.weight"])


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class NotAnArray:
    pass


def test_restricted_unpickler_refuses_code_and_foreign_objects(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {"conv1_w": RunsACommand(marker)}}))
    with pytest.raises(CheckpointError, match="system"):
        read_weights_pickle(evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing"):
        load_detectron2_pkl(ResNet(18, stem_channels=NARROW_WIDTH), evil)
    assert not marker.exists()
    foreign = tmp_path / "foreign.pkl"
    foreign.write_bytes(pickle.dumps({"conv1_w": NotAnArray()}))
    with pytest.raises(CheckpointError, match="NotAnArray"):
        read_weights_pickle(foreign)
    objects = tmp_path / "objects.pkl"
    objects.write_bytes(pickle.dumps({"conv1_w": np.array([1, "x"], dtype=object)}))
    with pytest.raises(CheckpointError, match="numeric array"):
        load_detectron2_pkl(ResNet(18, stem_channels=NARROW_WIDTH), objects)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="garbage.pkl"):
        read_weights_pickle(garbage)
