"""Load on `avis serve`: N concurrent uploads of the demo clip, for several --max-jobs.

For each job limit it starts `avis serve` as its own process (shipped tiny checkpoint), uploads
the bundled demo video N times at once over HTTP (real uploads, like the page's), polls until
every job ends and records: wall time of each job from upload to done, the total, the server
process's resident memory when idle (model loaded) and its peak (VmHWM from /proc), and
whether every job gave the same results.json. After the server stops it checks that its
temporary folder is gone.

    python benchmarks/serve_load.py [--uploads 4] [--max-jobs 1,2,4] [--seconds 600]

--seconds S uploads a long clip instead: the demo's 12 frames and soundtrack tiled to S seconds
(encoded at 1 fps), to load the server with videos that take the memory-bounded path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from avis.inference.shipped import DEMO_VIDEO, asset_path

POLL_S = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())


def upload_and_wait(base: str, data: bytes, index: int, out: list) -> None:
    start = time.perf_counter()
    request = urllib.request.Request(f"{base}/api/jobs?name=upload{index}.mp4", data=data, method="POST")
    with urllib.request.urlopen(request) as response:
        job_id = json.loads(response.read())["id"]
    while True:
        status = get_json(f"{base}/api/jobs/{job_id}")
        if status["state"] in ("done", "failed"):
            break
        time.sleep(POLL_S)
    results = None
    if status["state"] == "done":
        with urllib.request.urlopen(base + status["files"]["results.json"]) as response:
            results = response.read()
    out[index] = (status["state"], time.perf_counter() - start, results, status.get("error"))


def run(max_jobs: int, uploads: int, data: bytes) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="serve_load_") as temp:
        command = [
            sys.executable, "-m", "avis.cli.main", "serve", "--port", str(port),
            "--max-jobs", str(max_jobs), "--max-waiting", str(uploads), "--temp-dir", temp,
        ]  # fmt: skip
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    get_json(f"{base}/api/config")
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("avis serve did not start") from None
                    time.sleep(0.2)
            idle_kib = proc_kib(server.pid, "VmRSS")
            outcomes: list = [None] * uploads
            threads = [threading.Thread(target=upload_and_wait, args=(base, data, i, outcomes)) for i in range(uploads)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            total = time.perf_counter() - start
            peak_kib = proc_kib(server.pid, "VmHWM")
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
        leftovers = sorted(os.listdir(temp))
    states = [o[0] for o in outcomes]
    same = len({o[2] for o in outcomes}) == 1
    return {
        "max_jobs": max_jobs,
        "uploads": uploads,
        "done": states.count("done"),
        "errors": [o[3] for o in outcomes if o[3]],
        "job_s": sorted(round(o[1], 1) for o in outcomes),
        "total_s": round(total, 1),
        "idle_rss_mib": round(idle_kib / 1024),
        "peak_rss_mib": round(peak_kib / 1024),
        "identical_results": same,
        "temp_left": leftovers,
    }


def tiled_demo(seconds: int, path: Path) -> bytes:
    """The demo clip's frames (1 per second) and sound repeated to `seconds`, as an mp4."""
    import av
    import numpy as np

    from avis.io.video import read_video

    demo = read_video(asset_path(DEMO_VIDEO), fps=1.0)
    rate = demo.sample_rate
    sound = np.resize(demo.audio[: demo.num_frames * rate], seconds * rate).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=1)
        video.height, video.width, video.pix_fmt = *demo.frames.shape[1:3], "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        for t in range(seconds):
            frame = av.VideoFrame.from_ndarray(np.asarray(demo.frames[t % demo.num_frames]), format="rgb24")
            frame.pts = t
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate, frame_size=1024)
        chunk = av.AudioFrame.from_ndarray(sound[None], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = rate, 0
        for piece in [*resampler.resample(chunk), *resampler.resample(None)]:
            container.mux(audio.encode(piece))
        container.mux(audio.encode(None))
    return path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=4)
    parser.add_argument("--max-jobs", default="1,2,4", help="comma-separated job limits to try")
    parser.add_argument("--seconds", type=int, default=0, help="upload the demo tiled to this length")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        data = tiled_demo(args.seconds, Path(temp) / "long.mp4") if args.seconds else asset_path(DEMO_VIDEO).read_bytes()
    what = f"demo tiled to {args.seconds} s" if args.seconds else "demo clip (12 s)"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{what}, {len(data) / 1024:.0f} KiB; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| --max-jobs | uploads | done | each job, upload to result (s) | all (s) | idle RSS (MiB) | peak RSS (MiB) | same results | temp left |")
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |")
    for max_jobs in (int(x) for x in args.max_jobs.split(",")):
        r = run(max_jobs, args.uploads, data)
        print(f"| {r['max_jobs']} | {r['uploads']} | {r['done']} | {', '.join(map(str, r['job_s']))} | "
              f"{r['total_s']} | {r['idle_rss_mib']} | {r['peak_rss_mib']} | {r['identical_results']} | "
              f"{len(r['temp_left'])} files |", flush=True)
        if r["errors"]:
            print("errors:", r["errors"])


if __name__ == "__main__":
    main()
