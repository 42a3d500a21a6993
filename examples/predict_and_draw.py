"""avis from Python: run `VideoPredictor` on a video and draw the result with PIL.

    python examples/predict_and_draw.py                       # the bundled demo clip
    python examples/predict_and_draw.py my_clip.mp4 --out sheet.png --weights W --preset P

Prints each instance (class, score, the seconds in which it sounds) and writes a contact sheet:
every sampled frame (1 per second) with the sounding instances' masks drawn in their colours.
The same calls work in a notebook; `avis serve` / `avis predict` do this for you.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from avis.inference.predictor import VideoPredictor
from avis.inference.shipped import DEMO_VIDEO, asset_path
from avis.inference.summary import format_intervals
from avis.inference.timeline import instance_color
from avis.io.video import read_video

THUMB_WIDTH = 240  # px per frame on the sheet
COLUMNS = 4
ALPHA = 0.5  # mask opacity


def draw_frame(frame: np.ndarray, masks: np.ndarray, colours: list[tuple[int, int, int]]) -> Image.Image:
    """frame (H, W, 3) uint8, masks (N, H, W) bool -> the frame with each mask blended in."""
    out = frame.astype(np.float32)
    for mask, colour in zip(masks, colours):
        out[mask] = (1 - ALPHA) * out[mask] + ALPHA * np.asarray(colour, dtype=np.float32)
    return Image.fromarray(out.round().astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", type=Path, default=asset_path(DEMO_VIDEO))
    parser.add_argument("--out", type=Path, default=Path("avis_sheet.png"))
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the shipped tiny one)")
    parser.add_argument("--preset", help="needed for official AVISM checkpoints")
    args = parser.parse_args()

    # 1. load a model (the shipped tiny checkpoint unless --weights) and predict
    predictor = VideoPredictor.from_checkpoint(args.weights, preset=args.preset)
    prediction = predictor.predict(args.video)  # -> Prediction: scores, labels, RLE masks per frame

    # 2. what it found: one TrackSummary per instance
    for s in prediction.summaries():
        print(f"#{s.instance} {s.class_name:10s} score {s.score:.3f}  sounds {format_intervals(s.intervals)}")

    # 3. draw: the frames the model saw (1 per second) with the masks of that frame
    frames = read_video(args.video, fps=prediction.fps).frames  # (T, H, W, 3) uint8
    colours = [instance_color(i) for i in range(prediction.num_instances)]
    height, width = prediction.image_size
    thumb = (THUMB_WIDTH, round(THUMB_WIDTH * height / width))
    rows = -(-prediction.num_frames // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * thumb[0], rows * (thumb[1] + 16)), "white")
    pen = ImageDraw.Draw(sheet)
    for t in range(prediction.num_frames):
        result = prediction.frame(t)  # FrameResult: masks (N, H, W) bool, empty where silent
        picture = draw_frame(frames[t], result.masks, colours).resize(thumb)
        x, y = (t % COLUMNS) * thumb[0], (t // COLUMNS) * (thumb[1] + 16)
        sheet.paste(picture, (x, y + 16))
        names = [prediction.class_name(int(result.labels[i])) for i in np.flatnonzero(result.sounding)]
        pen.text((x + 4, y + 2), f"{result.time:g} s: {', '.join(names) or 'silence'}", fill="black")
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
