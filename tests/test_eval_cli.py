"""`avis eval`: table on stdout, metrics JSON comparable with the cases' expected.json."""

import json

import pytest

from avis.cli.main import main
from shared_data import METRIC_CASES

CASE = METRIC_CASES / "case_022"

pytestmark = pytest.mark.skipif(not CASE.exists(), reason="metric cases not available")


def test_eval_writes_the_metrics_of_the_official_evaluator(tmp_path, capsys):
    out = tmp_path / "m.json"
    code = main(["eval", "--gt", str(CASE / "gt.json"), "--pred", str(CASE / "pred.json"),
                 "--per-class", "--out", str(out)])
    assert code == 0
    written = json.loads(out.read_text())
    expected = json.loads((CASE / "expected.json").read_text())
    assert written["metrics"] == expected["metrics"]
    assert written["protocol"] == "official"
    assert set(written["extra"]) == {"AP50", "AP75"}
    assert "saxophone" in written["per_class"]
    printed = capsys.readouterr().out
    for word in ("FSLA", "HOTA", "AP_all", str(expected["metrics"]["HOTA"])):
        assert word in printed


def test_fixed_protocol_flag(tmp_path):
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(CASE / "gt.json"), "--pred", str(CASE / "pred.json"),
                 "--protocol", "fixed", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["protocol"] == "fixed"


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    preds = json.loads((CASE / "pred.json").read_text())
    preds[0]["video_id"] = 12345
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(preds))
    assert main(["eval", "--gt", str(CASE / "gt.json"), "--pred", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "prediction #0" in err and "unknown video id 12345" in err and "Traceback" not in err
