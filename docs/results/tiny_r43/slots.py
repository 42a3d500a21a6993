"""Frame by frame for one twin pair: which frame-decoder slot holds each twin, and which twin
each of the class's video tracks covers (splitting off, the checkpoint's test side).

Per frame: the twins' mask centroids (x, y in frame sides), for each twin the frame query
(slot) whose frame mask has the highest IoU with it, that IoU and the slot's probability of
the twins' class, then one letter per video track of the class (A / B: IoU > 0.5 with that
twin in this frame, . neither).

    python slots.py CKPT ROOT VIDEO_ID CATEGORY_ID    # ROOT: a test split (eval-seeds cache)
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from avis.data import load_split
from avis.data.annotations import decode_track
from avis.inference.predictor import VideoPredictor


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def centroid(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return "(   -   )"
    return f"({xs.mean() / mask.shape[1]:.2f},{ys.mean() / mask.shape[0]:.2f})"


def main() -> None:
    ckpt, root, video_id, cat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    predictor = VideoPredictor.from_checkpoint(ckpt, split_components=False)
    data = load_split(root, "test")
    video = next(v for v in data.videos if v.id == video_id)
    frames = data.load_frames(video)
    audio = data.load_audio(video).astype(np.float32)
    a, b = (decode_track(t) for t in data.tracks[video_id] if t.category_id == cat)
    scores, labels, masks = predictor.predict_arrays(frames, audio)
    t_len, h, w = a.shape
    with torch.no_grad():
        encode, (hi, wi), _ = predictor.encoder(frames, torch.from_numpy(audio))
        frame = encode(0, t_len, True).frame
        logits = frame.pred_masks[-1]  # (T, fQ, Hi/4, Wi/4)
        up = F.interpolate(logits, scale_factor=4, mode="bilinear")[..., :hi, :wi]
        slot_masks = (F.interpolate(up, size=(h, w), mode="bilinear") > 0).numpy()
        prob = frame.pred_logits[-1].softmax(-1)[..., cat - 1].numpy()  # (T, fQ)
    tracks = [i for i in range(len(labels)) if labels[i] == cat - 1 and scores[i] > 0.05]
    for t in range(t_len):
        row = f"t{t:02d} A{centroid(a[t])} B{centroid(b[t])}"
        for name, twin in (("A", a[t]), ("B", b[t])):
            ious = [iou(m, twin) for m in slot_masks[t]]
            slot = int(np.argmax(ious))
            row += f" slot{name} {slot:2d} {ious[slot]:.2f} p{prob[t, slot]:.2f}"
        letters = []
        for i in tracks:
            letters.append("A" if iou(masks[i][t], a[t]) > 0.5 else "B" if iou(masks[i][t], b[t]) > 0.5 else ".")
        print(row, "|", " ".join(letters))


if __name__ == "__main__":
    main()
