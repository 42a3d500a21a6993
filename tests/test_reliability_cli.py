"""Issue 18 for `avis eval`, `avis synth` and the CLI itself: inputs are never overwritten,
bad paths and values are one-line errors, surprising numbers are explained, unexpected
exceptions are one line unless --verbose, and every option's help shows its default."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from avis.cli.main import build_parser, main
from avis.eval.synthetic import SyntheticSpec, make_case


@pytest.fixture
def case(tmp_path) -> tuple[Path, Path]:
    gt, preds = make_case(np.random.default_rng(3), SyntheticSpec(num_videos=2, frames=(3, 4)))
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(preds))
    return gt_path, pred_path


def _eval(gt: Path, pred: Path, *extra: str) -> int:
    return main(["eval", "--gt", str(gt), "--pred", str(pred), *extra])


# ---------------------------------------------------------------- eval
def test_eval_never_overwrites_an_input_or_earlier_metrics(case, tmp_path, capsys):
    gt, pred = case
    before = {p: p.read_bytes() for p in case}
    for out in (pred, gt):
        for extra in ([], ["--force"]):
            assert _eval(gt, pred, "--out", str(out), *extra) == 1
            assert "also an input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in case} == before
    metrics = tmp_path / "m.json"
    metrics.write_text("earlier")
    assert _eval(gt, pred, "--out", str(metrics)) == 1
    assert "use --force" in capsys.readouterr().err and metrics.read_text() == "earlier"
    assert _eval(gt, pred, "--out", str(metrics), "--force") == 0
    assert "HOTA" in json.loads(metrics.read_text())["metrics"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_eval_bad_paths_are_one_line_errors(case, tmp_path, capsys):
    gt, pred = case
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (["--gt", str(tmp_path)], "is a folder"),
        (["--gt", str(tmp_path / "none.json")], "not found"),
        (["--pred", str(folder)], "is a folder"),
        (["--out", str(folder)], "is a folder"),
        (["--out", str(gt / "x.json")], "is a file"),
        (["--out", "/proc/avis_metrics.json"], "cannot write"),
    ]
    for args, why in cases:
        named = {"--gt": str(gt), "--pred": str(pred), **dict(zip(args[::2], args[1::2]))}
        assert main(["eval", *[x for kv in named.items() for x in kv]]) == 1, args
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_eval_huge_malformed_rle_is_a_clean_error(case, tmp_path, capsys):
    gt, pred = case
    preds = json.loads(pred.read_text())
    preds[0]["segmentations"][0] = {"size": preds[0]["segmentations"][0]["size"], "counts": "a" * 65536}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(preds))
    assert _eval(gt, bad) == 1
    err = capsys.readouterr().err
    assert "prediction #0" in err and "malformed RLE" in err and "Traceback" not in err


def test_eval_explains_empty_predictions_na_and_the_official_quirk(case, tmp_path, capsys):
    gt, _ = case
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "m.json"
    assert _eval(gt, empty, "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "the predictions list is empty" in printed
    # the synthetic case's objects are all small (72x96 frames): medium / large are n/a
    assert "n/a" in printed and "-100" not in printed.split("n/a:")[0]
    assert json.loads(out.read_text())["metrics"]["AP_l"] == -100.0  # the file keeps the official value
    gt_, pred = case
    assert _eval(gt_, pred) == 0
    assert "are not 720x1280" in capsys.readouterr().out
    assert _eval(gt_, pred, "--protocol", "fixed") == 0
    assert "720x1280" not in capsys.readouterr().out


# ---------------------------------------------------------------- synth
SMALL = ["--num-train", "1", "--num-val", "0", "--num-test", "1", "--min-frames", "2",
         "--max-frames", "2", "--size", "32", "--workers", "1"]  # fmt: skip


def test_synth_never_writes_into_someone_elses_folder(tmp_path, capsys):
    real = tmp_path / "AVISeg"
    (real / "test" / "JPEGImages").mkdir(parents=True)
    (real / "test.json").write_text('{"videos": []}')
    for extra in ([], ["--force"]):
        assert main(["synth", "--out", str(real), *SMALL, *extra]) == 1
        assert "not part of an avis synthetic data set" in capsys.readouterr().err
    assert (real / "test.json").read_text() == '{"videos": []}'
    assert sorted(p.name for p in real.rglob("*")) == ["JPEGImages", "test", "test.json"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["synth", "--out", str(a_file), *SMALL]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "huge"), *SMALL, "--size", "100000"]) == 1
    assert "--size <= 4096" in capsys.readouterr().err
    assert main(["synth", "--out", "/proc/avis_synth", *SMALL]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert main(["synth", "--out", str(a_file / "sub"), *SMALL]) == 1
    assert "is a file" in capsys.readouterr().err


def test_synth_replaces_an_earlier_set_only_with_force_and_whole(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), *SMALL]) == 0
    first = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert "test.json" in first
    assert main(["synth", "--out", str(out), *SMALL]) == 1
    assert "use --force" in capsys.readouterr().err
    # replaced by a set without a test split: no video of the old test split stays behind
    smaller = [a if a != "1" or i != 5 else "0" for i, a in enumerate(SMALL)]
    assert main(["synth", "--out", str(out), *smaller, "--force"]) == 0
    second = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert not any(p.startswith("test") for p in second) and "train.json" in second
    assert sorted(os.listdir(tmp_path)) == ["synth"]  # no staging folder left


def test_interrupted_synth_leaves_the_old_set_untouched(tmp_path, monkeypatch):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), *SMALL]) == 0
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupted(root, **kwargs):
        (Path(root) / "train.json").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr("avis.data.synth.generate_dataset", interrupted)
    assert main(["synth", "--out", str(out), *SMALL, "--force"]) == 130
    assert {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["synth"]


# ---------------------------------------------------------------- the CLI itself
def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("avis 0.")


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_option_with_a_default_shows_it_in_help():
    missing = []
    for name, sub in _subparsers(build_parser()):
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.default in (None, False) or not action.option_strings or not action.help:
                continue
            if action.dest not in ("help", "verbose") and "default" not in formatter._get_help_string(action):
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing
    names = dict(_subparsers(build_parser()))
    assert "default: avis_predictions" in names["predict"].format_help()
    assert "default: real,shuffled" in " ".join(names["ablate-audio"].format_help().split())
    assert "default: the checkpoint's, 0.3" in " ".join(names["demo"].format_help().split())


def test_unexpected_exception_is_one_line_unless_verbose(monkeypatch, capsys, case):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("avis.eval.evaluate", bug)
    gt, pred = case
    assert _eval(gt, pred) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: a bug" in err and "Traceback" not in err
    assert "--verbose" in err
    with pytest.raises(ZeroDivisionError):
        main(["eval", "--gt", str(gt), "--pred", str(pred), "-v"])


def test_os_errors_are_one_line(monkeypatch, capsys, case, tmp_path):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("avis.io.atomic.os.replace", full)
    gt, pred = case
    assert _eval(gt, pred, "--out", str(tmp_path / "m.json")) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists() and not list(tmp_path.glob(".*tmp*"))


# ---------------------------------------------------------------- the second barrage (docs/reliability.md)
def test_split_names_cannot_leave_the_root(tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["synth", "--out", str(root), *SMALL]) == 0
    for split in ("../root/train", "..", "a/b", "/etc/passwd"):
        for command in (["data", "check", "--root", str(root)], ["data", "stats", "--root", str(root)],
                        ["extract-audio", "--root", str(root)]):
            assert main([*command, "--split", split]) == 1, (command, split)
            assert "expected one plain name" in capsys.readouterr().err
        assert main(["predict", "--data", str(root), "--split", split]) == 1
        assert "expected one plain name" in capsys.readouterr().err


def test_absurd_json_is_a_data_error(case, tmp_path, capsys):
    gt, pred = case
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for args in (["--gt", str(deep), "--pred", str(pred)], ["--gt", str(gt), "--pred", str(deep)]):
        assert main(["eval", *args]) == 1
        err = capsys.readouterr().err
        assert "nested too deeply" in err and "internal error" not in err
    root = tmp_path / "root"
    root.mkdir()
    (root / "val.json").write_text("[" * 100_000 + "]" * 100_000)
    for command in (["data", "check"], ["extract-audio"]):
        assert main([*command, "--root", str(root), "--split", "val"]) == 1
        assert "internal error" not in capsys.readouterr().err
    # a length far beyond file_names would make the extractor allocate for it
    (root / "val.json").write_text(json.dumps({"videos": [{"file_names": ["v/0.jpg"], "length": 10**12}]}))
    assert main(["extract-audio", "--root", str(root), "--split", "val"]) == 1
    assert "expected the number of file_names (1)" in capsys.readouterr().err


def test_other_outputs_and_roots(tmp_path, capsys):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    earlier = tmp_path / "m.json"
    earlier.write_text("earlier")
    base = ["ablate-audio", "--weights", str(weights), "--data", str(tmp_path)]
    assert main([*base, "--json", str(weights), "--force"]) == 1
    assert "also an input" in capsys.readouterr().err
    assert main([*base, "--json", str(earlier)]) == 1
    assert "use --force" in capsys.readouterr().err
    assert weights.read_bytes() == b"weights" and earlier.read_text() == "earlier"
    for command in (["data", "check"], ["data", "stats"], ["extract-audio", "--split", "val"]):
        assert main([*command, "--root", str(weights)]) == 1
        assert "must be" in capsys.readouterr().err


def test_brackets_in_paths_are_printed_as_text(case, tmp_path, capsys):
    gt, pred = case
    out = tmp_path / "m[" / "].json"
    assert _eval(gt, pred, "--out", str(out)) == 0
    assert str(out) in capsys.readouterr().out.replace("\n", "")
    root = tmp_path / "r[" / "]"
    assert main(["synth", "--out", str(root), *SMALL]) == 0
    json_path = root / "train.json"
    obj = json.loads(json_path.read_text())
    obj["categories"][0]["name"] = "[/]odd"
    json_path.write_text(json.dumps(obj))
    (root / "train" / "WAVAudios" / "train_0000.wav").unlink()  # a warning naming the path
    assert main(["data", "check", "--root", str(root), "--skip-frames"]) == 0
    assert main(["data", "stats", "--root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "internal error" not in err
