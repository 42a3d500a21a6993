"""Online vs offline quality on an AVISeg-layout split (the latency table of docs/predict.md).

    avis synth --out /tmp/online_synth --num-train 0 --num-val 0     # the default test split
    python benchmarks/online_quality.py --data /tmp/online_synth --split test \
        --latencies 1,3,6 --out /tmp/online_quality

Runs the offline predictor (whole video) and the online predictor (`avis.inference.online`,
frames pushed one by one with the split's precomputed audio features) on every video, and
scores both with `avis.eval.evaluate` (fixed and official protocols). Offline records are
cached in `<out>/offline_records.json` (reused when present); each online setting writes
`<out>/online_L<latency>_S<window>_records.json`; all metrics go to `<out>/metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped tiny checkpoint")
    parser.add_argument("--latencies", default="1,3,6", help="comma-separated latencies (frames)")
    parser.add_argument("--window", type=int, default=0, help="online window (0 = default)")
    parser.add_argument("--max-videos", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], help="OnlineOptions field=value (tuning)")
    args = parser.parse_args(argv)

    import torch

    from avis.data import load_split
    from avis.engine.evaluation import subset_annotations
    from avis.eval import evaluate, load_ground_truth
    from avis.inference.online import OnlineOptions, OnlinePredictor
    from avis.inference.online_records import assemble, frame_record
    from avis.inference.predictor import VideoPredictor

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_split(args.data, args.split)
    videos = sorted(data.videos, key=lambda v: v.id)
    if args.max_videos:
        videos = videos[: args.max_videos]
    raw = json.loads((args.data / f"{args.split}.json").read_text())
    gt = load_ground_truth(subset_annotations(raw, {v.id for v in videos}))
    category_ids = [c.id for c in data.categories]
    predictor = VideoPredictor.from_checkpoint(args.weights, streaming=False)
    tag = f"_n{len(videos)}" if args.max_videos else ""

    def score(records: list[dict]) -> dict[str, float]:
        out = {}
        for protocol in ("fixed", "official"):
            metrics = evaluate(gt, records, protocol=protocol).metrics
            suffix = "" if protocol == "fixed" else "_official"
            for name, key in (("FSLA", "FA"), ("HOTA", "HOTA"), ("mAP", "AP_all")):
                out[name + suffix] = float(metrics[key] if metrics[key] is not None else float("nan"))
        return out

    results: dict[str, dict] = {}
    offline_path = args.out / f"offline_records{tag}.json"
    if offline_path.is_file():
        offline = json.loads(offline_path.read_text())
    else:
        offline, start = [], time.perf_counter()
        for video in videos:
            frames, audio = data.load_frames(video), data.load_audio(video)
            offline += predictor.predict((frames, audio)).records(video.id, category_ids)
        print(f"offline: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        offline_path.write_text(json.dumps(offline))
    results["offline"] = score(offline)
    print("offline", results["offline"], flush=True)

    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = type(getattr(OnlineOptions(), key))(value)
    for latency in [int(x) for x in args.latencies.split(",")]:
        options = OnlineOptions(latency=latency, window=args.window, **overrides)
        online = OnlinePredictor(predictor, options)
        records, start = [], time.perf_counter()
        for video in videos:
            frames, audio = data.load_frames(video), data.load_audio(video)
            emitted = [frame_record(f, predictor.class_names) for f in online.run(zip(frames, audio))]
            prediction, _ = assemble(
                emitted, frames.shape[1:3], source=str(video.id), fps=1.0,
                class_names=predictor.class_names, audio_features="precomputed",
            )  # fmt: skip
            records += prediction.records(video.id, category_ids)
        elapsed = time.perf_counter() - start
        name = f"online_L{latency}_S{online.window}"
        (args.out / f"{name}_records{tag}.json").write_text(json.dumps(records))
        results[name] = {**score(records), "latency": latency, "window": online.window, "seconds": round(elapsed, 1)}
        print(name, results[name], flush=True)
    metrics_path = args.out / f"metrics{tag}.json"
    previous = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    previous.update(results)
    metrics_path.write_text(json.dumps(previous, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
