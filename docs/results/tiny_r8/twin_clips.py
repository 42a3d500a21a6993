"""Video-level twin separation on training-like clips instead of whole videos.

    python docs/results/tiny_r8/twin_clips.py CHECKPOINT SHORT_SIDE [CLIP] [ROOT] [SPLIT]

For every twin pair, consecutive groups of CLIP (default 5) frames in which both twins sound
(spanning at most 20 frames, like the training sampler's +-10 window) are decoded as one
clip by the video module; counted: clips with >= 2 video queries of the twin class above
probability 0.5.
"""

import dataclasses
import sys
from pathlib import Path

import torch

from avis.data import load_split
from avis.inference.predictor import VideoPredictor

sys.path.insert(0, str(Path(__file__).parent))
from twins import twin_pairs  # noqa: E402

MAX_SPAN = 20


def main() -> None:
    ckpt, size = sys.argv[1], int(sys.argv[2])
    clip = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    root = sys.argv[4] if len(sys.argv) > 4 else "data/synth"
    split = sys.argv[5] if len(sys.argv) > 5 else "val"
    predictor = VideoPredictor.from_checkpoint(ckpt)
    predictor.config = dataclasses.replace(
        predictor.config, test_short_side=size, test_max_size=2 * size
    )
    data = load_split(root, split)
    total = separated = 0
    with torch.no_grad():
        for video, pairs in twin_pairs(data):
            frames, audio = data.load_frames(video), torch.from_numpy(data.load_audio(video))
            encode = predictor._encoder(frames, audio)[0]
            queries = encode(0, len(frames), True).frame_queries  # (T, fQ, C)
            for c, a, b in pairs:
                both = [
                    t for t in range(len(frames))
                    if a.segmentations[t] is not None and b.segmentations[t] is not None
                ]  # fmt: skip
                for start in range(0, len(both) - clip + 1, clip):
                    idx = torch.tensor(both[start : start + clip])
                    if idx[-1] - idx[0] > MAX_SPAN:
                        continue
                    video_out = predictor.model.decode_video(queries[idx], audio[idx])
                    probs = video_out.pred_logits[-1, 0, 0].softmax(-1)[:, c - 1]
                    total += 1
                    separated += int((probs > 0.5).sum() >= 2)
    print(f"{total} clips of {clip} both-sounding frames at {size} px: two confident queries "
          f"of the class in {separated} ({separated / max(total, 1):.1%})")


if __name__ == "__main__":
    main()
