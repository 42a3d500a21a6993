"""Inference cost of carry_slots: whole-video prediction of random 128 px frames tested at 256 px
by the tiny v2 model (random weights, score threshold 0 so no instance is dropped early),
with the option off and on, interleaved; one thread.

    python docs/results/tiny_r106/carry_cost.py [frames] [repeats]
"""

import sys
import time
from dataclasses import replace

import torch

from avis.inference.video import InferenceOptions, frames_encoder, predict_video
from avis.models.avism import build_avism
from avis.models.config import get_preset

frames_n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.set_num_threads(1)
torch.manual_seed(0)
base = get_preset("avism_tiny", num_classes=8, spatial_audio_bands=32, spatial_audio_bins=16,
                  spatial_audio_keys=True, per_frame_mask_embed=True)  # fmt: skip
models = {flag: build_avism(replace(base, carry_slots=flag)).eval() for flag in (False, True)}
models[True].load_state_dict(models[False].state_dict(), strict=True)
frames = torch.randint(0, 256, (frames_n, 3, 256, 256), dtype=torch.uint8)
audio = torch.cat([torch.randn(frames_n, 128), torch.rand(frames_n, 32 * 16)], 1)
options = InferenceOptions(score_threshold=0.0)
times = {False: [], True: []}
with torch.no_grad():
    for _ in range(repeats):
        for flag, model in models.items():
            encode, size, padded = frames_encoder(model, frames, audio)
            t0 = time.perf_counter()
            predict_video(model, encode, audio, size, padded, options=options)
            times[flag].append(time.perf_counter() - t0)
for flag, ts in times.items():
    print(f"carry_slots={flag}: best {min(ts):.2f} s for {frames_n} frames ({frames_n / min(ts):.1f} frames/s), all {[round(t, 2) for t in ts]}")
print(f"ratio on/off (best): {min(times[True]) / min(times[False]):.3f}")
