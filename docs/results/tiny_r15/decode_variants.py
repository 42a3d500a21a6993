"""Windowed (online-mode) or whole-video decoding, component splitting off, twin/other mAP.
python docs/results/tiny_r15/decode_variants.py CKPT QUERY_SIDE MASK_SIDE WINDOW LATENCY [MAXV] [ROOT]
WINDOW 0 = whole-video (offline) decoding; MASK_SIDE != QUERY_SIDE: queries from one pass,
mask features from another."""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from avis.engine.evaluation import SplitEvaluator
from avis.engine.seeds import SPLIT, score_with_twins, twin_video_ids
from avis.inference.online import OnlineOptions, OnlinePredictor
from avis.inference.online_records import assemble, frame_record
from avis.inference.predictor import VideoPredictor
from avis.models.avism import ChunkEncoding

ckpt, qside, mside, window, latency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
maxv = int(sys.argv[6]) if len(sys.argv) > 6 else 0
# default: the seed-200 test split that `avis eval-seeds --seeds 200` leaves in runs/eval_seeds
root = Path(sys.argv[7]) if len(sys.argv) > 7 else next(Path("runs/eval_seeds").glob("synth-v1-easy-128px-*-seed200-n120"))
torch.set_num_threads(1)


class Mixed(VideoPredictor):
    def encoder(self, frames, audio, reader=None, size=None):
        hi, hi_size, hi_pad = VideoPredictor.encoder(self, frames, audio, None, size)
        if qside == mside:
            return hi, hi_size, hi_pad
        saved = self.config
        self.config = dataclasses.replace(saved, test_short_side=qside, test_max_size=2 * qside)
        lo, _, _ = VideoPredictor.encoder(self, frames, audio, None, size)
        self.config = saved

        def encode(start, stop, with_queries):
            h = hi(start, stop, False)
            if not with_queries:
                return h
            q = lo(start, stop, True)
            return ChunkEncoding(mask_features=h.mask_features, frame_queries=q.frame_queries, frame=None, stride4_features=h.stride4_features)
        return encode, hi_size, hi_pad


p = Mixed.from_checkpoint(ckpt, split_components=False, streaming=False)
p.prefetch = False
p.config = dataclasses.replace(p.config, test_short_side=mside, test_max_size=2 * mside)
ev = SplitEvaluator(root, SPLIT, p.config, list(p.class_names), max_videos=maxv)
raw = json.loads((root / f"{SPLIT}.json").read_text())
twins = twin_video_ids(raw)
online = OnlinePredictor(p, OnlineOptions(latency=latency, window=window)) if window else None
records = []
with torch.no_grad():
    for video in ev.videos:
        frames, audio = ev.data.load_frames(video), ev.data.load_audio(video).astype(np.float32)
        if online is None:
            pred = p.predict((frames, audio))
            records += pred.records(video.id, ev.category_ids)
            continue
        emitted = [frame_record(f, p.class_names) for f in online.run(zip(frames, audio))]
        pred, _ = assemble(emitted, frames.shape[1:3], source=str(video.id), fps=1.0, class_names=p.class_names, audio_features="precomputed")
        records += pred.records(video.id, ev.category_ids)
m = score_with_twins(ev, raw, twins, records)
print(Path(ckpt).parent.name, f"q{qside} m{mside} S{window} L{latency} n{len(ev.videos)}", {k: round(v, 1) for k, v in m.items() if not k.endswith("official")}, flush=True)
