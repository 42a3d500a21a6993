"""Checkpoints: official key coverage (R50 / Swin-L listings), strict errors, avis format,
`avis convert` both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avis.cli.main import main
from avis.errors import CheckpointError
from avis.models.avism import build_avism
from avis.models.checkpoint import (
    avis_to_official,
    check_state_dict,
    load_model,
    load_state_dict_strict,
    official_to_avis,
    read_checkpoint,
    save_model,
)
from avis.models.config import PRESETS, get_preset
from shared_data import AVISM_REFERENCE

REFERENCE = AVISM_REFERENCE
LISTINGS = {"avism_r50": "keys_R50.json", "avism_swinl": "keys_SwinL.json"}
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def _listing(preset: str) -> list[dict]:
    path = REFERENCE / LISTINGS[preset]
    if not path.is_file():
        pytest.skip("reference listings not available")
    return json.loads(path.read_text())["keys"]


def _random_state_dict(keys: list[dict]) -> dict[str, torch.Tensor]:
    """Random values with exactly the listed keys, shapes and dtypes (one random number per
    key, broadcast without allocating the full tensor)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for entry in keys:
        dtype = DTYPES[entry["dtype"]]
        value = (
            torch.randint(0, 100, (1,), generator=g)
            if dtype == torch.int64
            else torch.randn(1, generator=g)
        )
        out[entry["key"]] = (
            value.to(dtype).reshape([1] * len(entry["shape"])).expand(entry["shape"])
        )
    return out


@pytest.mark.parametrize("preset", sorted(LISTINGS))
def test_official_listing_loads_strictly_and_back(preset: str) -> None:
    keys = _listing(preset)
    official = _random_state_dict(keys)
    with torch.device("meta"):  # keys, shapes, dtypes only
        model = build_avism(PRESETS[preset]())
    converted = official_to_avis(official, preset)
    check_state_dict(model, converted, preset)  # the strict checker of load_state_dict_strict
    model.load_state_dict(converted, strict=True, assign=True)
    ours = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    for entry in keys:
        if entry["key"].endswith("criterion.empty_weight"):
            continue
        name = official_to_avis({entry["key"]: official[entry["key"]]})
        (avis_key,) = name
        assert ours[avis_key].dtype == DTYPES[entry["dtype"]], avis_key
        assert (avis_key in params) == (entry["kind"] == "parameter"), avis_key
    back = avis_to_official(converted, num_classes=PRESETS[preset]().num_classes)
    assert list(back) == list(official) or set(back) == set(official)
    assert all(back[k].shape == official[k].shape for k in official)
    assert torch.equal(back["criterion.empty_weight"][-1:], torch.tensor([0.1]))


def test_vita_names_of_coco_checkpoints() -> None:
    keys = _listing("avism_r50")
    official = _random_state_dict(keys)
    coco = {}
    for key, value in official.items():
        key = key.replace("avism_module.avism_mask_features", "vita_module.vita_mask_features")
        key = key.replace("avism_module.", "vita_module.").replace(
            "avism_criterion.", "vita_criterion."
        )
        coco[key] = value
    assert official_to_avis(coco).keys() == official_to_avis(official).keys()
    back = avis_to_official(official_to_avis(coco), naming="vita", num_classes=26)
    assert set(back) == set(coco)


def _tiny(**overrides):
    cfg = get_preset("avism_tiny", **overrides)
    torch.manual_seed(0)
    return build_avism(cfg).eval(), cfg


def test_strict_errors_name_the_problem() -> None:
    model, _ = _tiny()
    sd = dict(model.state_dict())
    sd.pop("video_module.fq_pos.weight")
    sd["video_module.extra.weight"] = torch.zeros(1)
    sd["frame_decoder.query_feat.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, sd, "bad.pth")
    msg = str(err.value)
    assert "bad.pth" in msg and "video_module.fq_pos.weight" in msg
    assert "video_module.extra.weight" in msg and "frame_decoder.query_feat.weight" in msg
    assert "(3, 3)" in msg
    with pytest.raises(CheckpointError, match="no part of AVISM"):
        official_to_avis({"sem_seg_head.other.weight": torch.zeros(1)})


def test_avis_format_round_trip(tmp_path: Path) -> None:
    model, cfg = _tiny(window_size=3)
    path = tmp_path / "tiny.pth"
    save_model(path, model, cfg, iteration=7)
    loaded, cfg2 = load_model(path)
    assert cfg2 == cfg and read_checkpoint(path)["iteration"] == 7
    frames = torch.rand(1, 2, 3, 64, 64) * 255
    audio = torch.randn(1, 2, cfg.audio_dim)
    with torch.no_grad():
        a = model(frames, audio, [(64, 64)])
        b = loaded(frames, audio, [(64, 64)])
    assert torch.equal(a.video.pred_logits, b.video.pred_logits)


def test_official_file_needs_preset(tmp_path: Path) -> None:
    model, cfg = _tiny()
    path = tmp_path / "official.pth"
    torch.save({"model": avis_to_official(model.state_dict(), num_classes=cfg.num_classes)}, path)
    with pytest.raises(CheckpointError, match="preset"):
        load_model(path)
    loaded, _ = load_model(path, preset="avism_tiny")
    check_state_dict(loaded, model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


class _NotAllowed:
    pass


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_checkpoint(path)


def test_cli_convert_both_ways(tmp_path: Path, capsys) -> None:
    model, cfg = _tiny()
    official = tmp_path / "official.pth"
    torch.save(
        {"model": avis_to_official(model.state_dict(), num_classes=cfg.num_classes)}, official
    )
    ours = tmp_path / "avis.pth"
    assert (
        main(["convert", "--src", str(official), "--preset", "avism_tiny", "--out", str(ours)]) == 0
    )
    back = tmp_path / "back.pth"
    assert main(["convert", "--src", str(ours), "--out", str(back), "--naming", "vita"]) == 0
    original = torch.load(official, weights_only=True)["model"]
    again = torch.load(back, weights_only=True)["model"]
    renamed = {k.replace("avism_", "vita_"): v for k, v in original.items()}
    assert set(again) == set(renamed)
    assert all(torch.equal(again[k], renamed[k]) for k in renamed)
    # no preset for an official file, and no silent overwrite: clean errors, exit code 1
    assert main(["convert", "--src", str(official), "--out", str(tmp_path / "x.pth")]) == 1
    assert (
        main(["convert", "--src", str(official), "--preset", "avism_tiny", "--out", str(ours)]) == 1
    )
    assert "error" in capsys.readouterr().err
