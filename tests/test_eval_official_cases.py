"""The official protocol reproduces every golden case of /work/shared/metric_cases exactly.

The expected numbers are read from each case's expected.json (never copied here).
"""

import json
import math

import pytest

from avis.eval import METRIC_KEYS, evaluate
from shared_data import METRIC_CASES

CASES_DIR = METRIC_CASES
CASES = sorted(CASES_DIR.glob("case_*"))
UNROUNDED_REL_TOL = 1e-9  # the README's allowance for a different summation order

pytestmark = pytest.mark.skipif(not CASES, reason=f"no metric cases under {CASES_DIR}")


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.name)
def case(request):
    folder = request.param
    expected = json.loads((folder / "expected.json").read_text())
    result = evaluate(folder / "gt.json", folder / "pred.json", protocol="official")
    return expected, result


def test_metric_keys_are_those_of_the_cases(case):
    expected, result = case
    assert tuple(expected["metrics"]) == METRIC_KEYS
    assert tuple(result.metrics) == METRIC_KEYS


def test_rounded_metrics_exact(case):
    expected, result = case
    assert result.metrics == expected["metrics"]
    for key, value in result.metrics.items():
        assert type(value) is type(expected["metrics"][key]), key


def test_unrounded_metrics_close(case):
    expected, result = case
    for key, want in expected["unrounded"].items():
        got = result.unrounded[key]
        if want is None:
            assert got is None, key
        else:
            assert math.isclose(got, want, rel_tol=UNROUNDED_REL_TOL, abs_tol=1e-12), key


def test_plain_records_give_the_same_result(case):
    expected, result = case
    folder = CASES_DIR / expected["case"]
    gt = json.loads((folder / "gt.json").read_text())
    preds = json.loads((folder / "pred.json").read_text())
    assert evaluate(gt, preds).metrics == result.metrics
