"""Accuracy cost of a reduced `--precision` against strict fp32, on the shipped checkpoint.

Runs the shipped tiny checkpoint over a synthetic split twice (fp32 and the given precision),
scores both with `avis.eval` (fixed and official protocols: FSLA, HOTA, mAP) and compares
the tracks: each fp32 track is matched to the other run's track of the same class with the
highest whole-video mask IoU (unmatched: IoU 0). Also counts the tracks only one run kept.

    avis synth --out /tmp/gpu_synth --num-train 1 --num-val 1 --no-wav   # the default test split
    python benchmarks/precision_accuracy.py --data /tmp/gpu_synth --precision bf16 \\
        [--device cpu] [--max-videos 0] [--out precision_accuracy.json] [--pixel-decoder-fp32] [--mask-logits-low]

The test videos of `avis synth` depend only on (seed, split, index), so this test split is
the one the checkpoint's published numbers use (docs/synthetic-benchmark.md). A shipped
checkpoint that reads where the sound is (benchmark v2) needs the v2 split (`avis synth
--preset stereo`); the split is loaded with its maps when the checkpoint reads them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def track_ious(ref: tuple, other: tuple) -> list[float]:
    """Best same-class whole-video mask IoU of each reference track (0 when none)."""
    _, ref_labels, ref_masks = ref
    _, labels, masks = other
    out = []
    for label, mask in zip(ref_labels, ref_masks):
        best = 0.0
        for label2, mask2 in zip(labels, masks):
            if label2 != label:
                continue
            union = np.logical_or(mask, mask2).sum()
            inter = np.logical_and(mask, mask2).sum()
            best = max(best, float(inter / union) if union else 1.0)
        out.append(best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="AVISeg-layout root (avis synth output)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--precision", default="bf16", help="the reduced precision to compare with fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-videos", type=int, default=0, help="first N videos by id (0 = all)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--mask-logits-low",
        action="store_true",
        help="mask logits of the post-processing in the low dtype (measures the float32 island)",
    )
    parser.add_argument(
        "--pixel-decoder-fp32",
        action="store_true",
        help="keep the pixel decoder in float32 under bf16 too (the official island; measures what it buys)",
    )
    args = parser.parse_args()

    import torch

    from avis.data import load_split
    from avis.eval import evaluate, load_ground_truth
    from avis.inference.predictor import VideoPredictor
    from avis.inference.results import video_records

    base = VideoPredictor.from_checkpoint(device=args.device, precision="fp32")
    data = load_split(args.data, args.split, spatial_audio=base.config.spatial_audio)
    videos = sorted(data.videos, key=lambda v: v.id)
    if args.max_videos > 0:
        videos = videos[: args.max_videos]
    ids = {v.id for v in videos}
    raw = json.loads((Path(args.data) / f"{args.split}.json").read_text())
    raw = {**raw, "videos": [v for v in raw["videos"] if v["id"] in ids],
           "annotations": [a for a in raw["annotations"] if a["video_id"] in ids]}  # fmt: skip
    gt = load_ground_truth(raw)
    category_ids = [c.id for c in data.categories]
    if args.mask_logits_low:
        from avis.inference import postprocess

        postprocess.MASK_LOGITS_FLOAT32 = False
    if args.pixel_decoder_fp32:
        base.model.pixel_decoder.fp32_under_autocast = (torch.float16, torch.bfloat16)
    runs = {"fp32": base}
    if args.precision != "fp32":
        runs[args.precision] = VideoPredictor(
            base.model, base.config, base.info, device=args.device, precision=args.precision
        )
    outputs: dict[str, list] = {name: [] for name in runs}
    records: dict[str, list] = {name: [] for name in runs}
    seconds = dict.fromkeys(runs, 0.0)
    for index, video in enumerate(videos):
        frames = data.load_frames(video)
        audio = data.load_audio_input(video).astype(np.float32)  # (T, D [+ B*P])
        for name, predictor in runs.items():
            start = time.perf_counter()
            with torch.inference_mode():
                scores, labels, masks = predictor.predict_arrays(frames, audio)
            seconds[name] += time.perf_counter() - start
            outputs[name].append((scores, labels, masks))
            records[name] += video_records(video.id, scores, labels, masks, category_ids)
        print(f"{index + 1}/{len(videos)} video {video.id}", flush=True)
    result: dict = {"videos": len(videos), "frames": int(sum(v.length for v in videos)),
                    "device": args.device, "torch": torch.__version__,
                    "pixel_decoder_fp32": bool(args.pixel_decoder_fp32) or args.precision == "fp16",
                    "mask_logits_float32": not args.mask_logits_low,
                    "runs": {}}  # fmt: skip
    for name in runs:
        metrics = {}
        for protocol in ("fixed", "official"):
            m = evaluate(gt, records[name], protocol=protocol).metrics
            suffix = "" if protocol == "fixed" else "_official"
            metrics.update({f"FSLA{suffix}": m["FA"], f"HOTA{suffix}": m["HOTA"], f"mAP{suffix}": m["AP_all"]})
        result["runs"][name] = {"metrics": metrics, "tracks": sum(len(o[0]) for o in outputs[name]),
                                "seconds": seconds[name]}  # fmt: skip
    if args.precision != "fp32":
        ious = [iou for a, b in zip(outputs["fp32"], outputs[args.precision]) for iou in track_ious(a, b)]
        back = [iou for a, b in zip(outputs["fp32"], outputs[args.precision]) for iou in track_ious(b, a)]
        arr = np.array(ious) if ious else np.zeros(0)
        result["track_iou"] = {
            "fp32_tracks": len(ious),
            "mean": float(arr.mean()) if len(arr) else None,
            "min": float(arr.min()) if len(arr) else None,
            "p05": float(np.percentile(arr, 5)) if len(arr) else None,
            "below_0.9": int((arr < 0.9).sum()),
            "fp32_tracks_unmatched": int((arr == 0).sum()),
            "other_tracks_unmatched": int(sum(1 for v in back if v == 0)),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
