"""The Python API: typed result, GT parsed once and reused, progress, per-class breakdown."""

import copy

import numpy as np
import pytest

from avis.eval import METRIC_KEYS, EvalResult, evaluate, load_ground_truth
from avis.eval.synthetic import SyntheticSpec, make_case


@pytest.fixture(scope="module")
def case():
    spec = SyntheticSpec(num_videos=3, frames=(4, 8), gt_tracks=(1, 3), class_pool=3)
    return make_case(np.random.default_rng(3), spec)


def test_result_is_typed_and_complete(case):
    gt, preds = case
    result = evaluate(gt, preds)
    assert isinstance(result, EvalResult)
    assert tuple(result.metrics) == METRIC_KEYS == tuple(result.unrounded)
    assert result.protocol == "official" and result.per_class is None
    assert result.num_videos == 3 and result.num_predictions == len(preds)
    for key, value in result.metrics.items():
        raw = result.unrounded[key]
        if key.startswith("FA") and key.endswith(("_count", "_all")):
            assert value == int(raw)
        elif value is not None:
            assert value == float(np.round(raw, 2))


def test_parsed_ground_truth_is_reusable_and_inputs_are_not_modified(case):
    gt, preds = case
    gt_before, preds_before = copy.deepcopy(gt), copy.deepcopy(preds)
    parsed = load_ground_truth(gt)
    calls = []
    first = evaluate(parsed, preds, progress=lambda done, total: calls.append((done, total)))
    second = evaluate(parsed, preds, protocol="fixed")
    assert first.metrics == evaluate(gt, preds).metrics
    assert second.metrics == evaluate(gt, preds, protocol="fixed").metrics
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert gt == gt_before and preds == preds_before


def test_per_class_breakdown(case):
    gt, preds = case
    result = evaluate(gt, preds, per_class=True)
    assert set(result.per_class) == {c["name"] for c in gt["categories"]}
    used = {a["category_id"] for a in gt["annotations"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for cat_id, name in names.items():
        row = result.per_class[name]
        assert row["num_gt_tracks"] == sum(a["category_id"] == cat_id for a in gt["annotations"])
        assert (row["AP"] is None) == (cat_id not in used)
    # The official HOTA is the plain mean of the per-class HOTA over all categories.
    mean = np.mean([row["HOTA"] for row in result.per_class.values()])
    assert mean == pytest.approx(result.unrounded["HOTA"], rel=1e-9)


def test_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        evaluate({"videos": [], "annotations": [], "categories": []}, [], protocol="paper")
