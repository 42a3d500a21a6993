"""HOTA and track mAP agree with the independent `trackeval` package on random cases.

The per-sequence data dicts that trackeval's metrics consume are built here straight from the
JSON records with pycocotools, the way TrackEval's YouTube-VIS reader builds them (GT polygons
rasterised and merged, as the official AVIS reader does), without any of avis's own tables.

Official protocol: every random case (trackeval's own behaviour is the official one: empty
masks are detections, prediction id 0 never blocks a GT, all classes averaged for HOTA).
Fixed protocol: cases where the two protocols coincide (absent frames are null, every track
shows up somewhere, scores are distinct, ids start at 1), with empty classes ignored.
"""

import numpy as np
import pytest

from avis.eval import evaluate
from avis.eval.synthetic import SyntheticSpec, make_case

trackeval = pytest.importorskip("trackeval")

NUM_CASES = 32
HOTA_KEYS = ("HOTA", "DetA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA")
MAP_KEYS = ("AP_all", "AP_s", "AP_m", "AP_l", "AR_all")
TOLERANCE = 1e-9
AREA_RANGES = [[0, 128**2], [128**2, 256**2], [256**2, 1e5**2]]


def _gt_rle(seg, h, w):
    from pycocotools import mask as mask_utils

    if not seg:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))


def _mean_truthy(values):
    values = [a for a in values if a]
    return float(np.array(values).mean()) if values else 0


def trackeval_scores(gt, preds, first_pred_id, ignore_empty_classes):
    """HOTA and TrackMAP summaries from trackeval, fed per video and class."""
    from pycocotools import mask as mask_utils
    from trackeval.metrics import HOTA, TrackMAP

    hota = HOTA()
    tmap = TrackMAP({"USE_TIME_RANGES": False, "AREA_RANGES": AREA_RANGES, "PRINT_CONFIG": False})
    classes = [c["id"] for c in gt["categories"]]
    hota_res = {c: {} for c in classes}
    map_res = {c: {} for c in classes}
    next_id = first_pred_id
    for video in sorted(gt["videos"], key=lambda v: v["file_names"][0].split("/")[0]):
        name, h, w, T = video["file_names"][0].split("/")[0], video["height"], video["width"], len(video["file_names"])
        anns = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
        gt_segs = [[_gt_rle(s, h, w) for s in a["segmentations"]] for a in anns]
        tracks = [p for p in preds if p["video_id"] == video["id"]]
        tr_ids = list(range(next_id, next_id + len(tracks)))
        next_id += len(tracks)
        for c in classes:
            gi = [i for i, a in enumerate(anns) if a["category_id"] == c]
            ti = [i for i, p in enumerate(tracks) if p["category_id"] == c]
            data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
            for t in range(T):
                g_t = [i for i in gi if gt_segs[i][t]]
                p_t = [i for i in ti if tracks[i]["segmentations"][t]]
                data["gt_ids"].append(np.array([anns[i]["id"] for i in g_t], dtype=int))
                data["tracker_ids"].append(np.array([tr_ids[i] for i in p_t], dtype=int))
                sim = mask_utils.iou([gt_segs[i][t] for i in g_t],
                                     [tracks[i]["segmentations"][t] for i in p_t], [0] * len(p_t))
                data["similarity_scores"].append(np.asarray(sim, dtype=float).reshape(len(g_t), len(p_t)))
            for key, num in (("gt_ids", "num_gt"), ("tracker_ids", "num_tracker")):
                uniq = np.unique(np.concatenate(data[key])) if data[key] else np.zeros(0, int)
                remap = {old: new for new, old in enumerate(uniq.tolist())}
                data[key] = [np.array([remap[i] for i in ids.tolist()], dtype=int) for ids in data[key]]
                data[num + "_ids"] = len(uniq)
                data[num + "_dets"] = sum(len(ids) for ids in data[key])
            hota_res[c][name] = hota.eval_sequence(data)

            scores = [tracks[i]["score"] for i in ti]
            order = np.argsort([-s for s in scores], kind="mergesort")
            ti = [ti[i] for i in order]
            dt_areas = [_mean_truthy([mask_utils.area(s) if s else None for s in tracks[i]["segmentations"]]) for i in ti]
            map_data = {
                "gt_track_ids": [anns[i]["id"] for i in gi],
                "dt_track_ids": [tr_ids[i] for i in ti],
                "gt_tracks": [dict(enumerate(gt_segs[i])) for i in gi],
                "dt_tracks": [dict(enumerate(tracks[i]["segmentations"])) for i in ti],
                "gt_track_areas": [_mean_truthy(anns[i]["areas"]) for i in gi],
                "dt_track_areas": dt_areas,
                "gt_track_iscrowd": [anns[i]["iscrowd"] for i in gi],
                "dt_track_scores": [tracks[i]["score"] for i in ti],
                "iou_type": "mask",
            }
            map_res[c][name] = tmap.eval_sequence(map_data)
    hota_cls = {c: hota.combine_sequences(hota_res[c]) for c in classes}
    map_cls = {c: tmap.combine_sequences(map_res[c]) for c in classes}
    h_all = hota.combine_classes_class_averaged(hota_cls, ignore_empty_classes=ignore_empty_classes)
    m_all = tmap.combine_classes_class_averaged(map_cls)
    out = {k: 100 * float(np.mean(h_all[k])) for k in HOTA_KEYS}
    labels = {"AP_all": "AP_all", "AP_s": "AP_area_s", "AP_m": "AP_area_m", "AP_l": "AP_area_l", "AR_all": "AR_all"}
    out.update({k: 100 * float(np.mean(m_all[labels[k]])) for k in MAP_KEYS})
    return out


def _spec(seed: int, coincide: bool) -> SyntheticSpec:
    rng = np.random.default_rng(seed)
    return SyntheticSpec(
        num_videos=int(rng.integers(1, 4)),
        frames=(4, 10),
        height=int(rng.choice([48, 120, 240])),
        width=int(rng.choice([64, 160, 320])),
        gt_tracks=(1, 4),
        preds_per_gt=(0, 2),
        false_positives=(0, 2),
        class_pool=int(rng.integers(1, 5)),
        empty_as_null=coincide,
        unique_scores=coincide,
        crowd_prob=0.0 if coincide else 0.15,
    )


def _drop_absent_tracks(gt, preds):
    """Keep only tracks that show up somewhere (the fixed protocol ignores the others)."""
    from pycocotools import mask as mask_utils

    gt = dict(gt)
    gt["annotations"] = [a for a in gt["annotations"] if any(x for x in a["areas"] if x)]
    preds = [p for p in preds if any(s and mask_utils.area(s) for s in p["segmentations"])]
    return gt, preds


def _assert_close(ours, theirs, keys):
    for key in keys:
        assert ours[key] == pytest.approx(theirs[key], rel=TOLERANCE, abs=TOLERANCE), key


@pytest.mark.parametrize("seed", range(NUM_CASES))
def test_official_matches_trackeval(seed):
    gt, preds = make_case(np.random.default_rng(seed), _spec(seed, coincide=False))
    ours = evaluate(gt, preds, protocol="official").unrounded
    theirs = trackeval_scores(gt, preds, first_pred_id=0, ignore_empty_classes=False)
    _assert_close(ours, theirs, HOTA_KEYS + MAP_KEYS)


@pytest.mark.parametrize("seed", range(NUM_CASES))
def test_fixed_matches_trackeval_where_protocols_coincide(seed):
    gt, preds = make_case(np.random.default_rng(1000 + seed), _spec(1000 + seed, coincide=True))
    gt, preds = _drop_absent_tracks(gt, preds)
    ours = evaluate(gt, preds, protocol="fixed").unrounded
    theirs = trackeval_scores(gt, preds, first_pred_id=1, ignore_empty_classes=True)
    _assert_close(ours, theirs, HOTA_KEYS + MAP_KEYS)
    official = evaluate(gt, preds, protocol="official").unrounded
    theirs_official = trackeval_scores(gt, preds, first_pred_id=0, ignore_empty_classes=False)
    _assert_close(official, theirs_official, HOTA_KEYS + MAP_KEYS)
