"""Online mode: throughput against offline, and peak memory against stream length.

    # frames/s, R50 at 360p, random weights, online (latency 3) vs offline, one process each
    python benchmarks/online_speed.py speed --preset avism_r50 --frames 24 --size 360 640
    # peak memory (VmHWM) of a 60- vs a 600-frame stream, shipped tiny model, fresh processes
    python benchmarks/online_speed.py memory --frames 60 600

Frames are synthetic (a moving gradient with squares, `long_video_memory.LazyFrames`), audio
features random. `speed` times `VideoPredictor.predict` (offline, whole video) and the
`OnlinePredictor.push` loop (frames one at a time, records as JSON lines, as `avis predict
--online` writes them) on the same frames, after one warm-up frame each. `memory` runs the
online loop in a fresh subprocess per length and reports the peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a package

MIB = 2**20


def _predictor(preset: str | None, threads: int):
    import torch

    from avis.inference.predictor import VideoPredictor
    from avis.inference.shipped import ModelInfo

    torch.set_num_threads(threads)
    if preset is None:
        return VideoPredictor.from_checkpoint(streaming=False)
    from benchmarks.stages import build_model

    model, cfg = build_model(preset)
    names = [f"class_{i}" for i in range(cfg.num_classes)]
    return VideoPredictor(model, cfg, ModelInfo("random", "avis", names, None), streaming=False)


def _online_loop(predictor, frames, audio, latency: int, sink) -> float:
    from avis.inference.online import OnlineOptions, OnlinePredictor
    from avis.inference.online_records import frame_record

    online = OnlinePredictor(predictor, OnlineOptions(latency=latency))
    start = time.perf_counter()
    for t in range(frames.shape[0]):
        for result in online.push(frames[t : t + 1][0], audio[t]):
            sink.write(json.dumps(frame_record(result, predictor.class_names)) + "\n")
    for result in online.flush():
        sink.write(json.dumps(frame_record(result, predictor.class_names)) + "\n")
    return time.perf_counter() - start


def speed(args: argparse.Namespace) -> dict:
    import io

    import numpy as np
    from benchmarks.common import machine_info
    from benchmarks.long_video_memory import LazyFrames

    predictor = _predictor(args.preset, args.threads)
    frames = LazyFrames(args.frames, *args.size)[0 : args.frames]
    audio = np.random.default_rng(0).normal(size=(args.frames, predictor.config.input_audio_dim)).astype(np.float32)
    predictor.predict((frames[:2], audio[:2]))  # warm-up
    out: dict = {"preset": args.preset or "shipped tiny", "frames": args.frames, "size": args.size,
                 "latency": args.latency, "threads": args.threads, "machine": machine_info()}  # fmt: skip
    runs: dict[str, list[float]] = {"offline": [], "online": []}
    for _ in range(args.repeats):  # interleaved
        start = time.perf_counter()
        predictor.predict((frames, audio))
        runs["offline"].append(time.perf_counter() - start)
        runs["online"].append(_online_loop(predictor, frames, audio, args.latency, io.StringIO()))
    for name, seconds in runs.items():
        best = float(np.median(seconds))
        out[name] = {"seconds": seconds, "frames_per_second": args.frames / best}
    out["online_over_offline"] = out["online"]["frames_per_second"] / out["offline"]["frames_per_second"]
    return out


def memory_child(args: argparse.Namespace) -> dict:
    import numpy as np
    from benchmarks.long_video_memory import LazyFrames, _status_kib

    predictor = _predictor(args.preset, args.threads)
    baseline = _status_kib("VmRSS") * 1024
    frames = LazyFrames(args.frames[0], *args.size)
    rng = np.random.default_rng(0)
    with open("/dev/null", "w") as sink:
        from avis.inference.online import OnlineOptions, OnlinePredictor
        from avis.inference.online_records import frame_record

        online = OnlinePredictor(predictor, OnlineOptions(latency=args.latency))
        start = time.perf_counter()
        for t in range(args.frames[0]):
            audio = rng.normal(size=predictor.config.input_audio_dim).astype(np.float32)
            for result in online.push(frames[t : t + 1][0], audio):
                sink.write(json.dumps(frame_record(result, predictor.class_names)) + "\n")
        for result in online.flush():
            sink.write(json.dumps(frame_record(result, predictor.class_names)) + "\n")
        seconds = time.perf_counter() - start
    return {"frames": args.frames[0], "peak_mib": _status_kib("VmHWM") * 1024 / MIB,
            "baseline_mib": baseline / MIB, "seconds": seconds, "tracks_made": online.linker.next_id - 1}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("speed", "memory", "memory-child"))
    parser.add_argument("--preset", default=None, help="random-weight preset (default: the shipped tiny checkpoint)")
    parser.add_argument("--frames", type=int, nargs="+", default=[24])
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--latency", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="append the result to this JSON-lines file")
    args = parser.parse_args()
    if args.mode == "speed":
        args.frames = args.frames[0]
        result = speed(args)
    elif args.mode == "memory-child":
        result = memory_child(args)
    else:
        rows = []
        for frames in args.frames:
            cmd = [sys.executable, __file__, "memory-child", "--frames", str(frames), "--size", *map(str, args.size),
                   "--latency", str(args.latency), "--threads", str(args.threads)]  # fmt: skip
            if args.preset:
                cmd += ["--preset", args.preset]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        result = {"mode": "memory", "rows": rows, "ratio": rows[-1]["peak_mib"] / rows[0]["peak_mib"]}
    text = json.dumps(result)
    print(text)
    if args.json:
        with args.json.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
