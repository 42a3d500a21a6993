"""A contact sheet of frames with their ground-truth masks (the picture in the docs).

    python -m avis.data.synth.preview --root DIR --split train --out docs/img/synth_examples.png

Each row is a video, each cell a frame: sounding instances are outlined in a colour
per track with their class name; objects without a mask in that frame are silent (or hidden).

Letters: H x W frame size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from avis.data.split import AVISegSplit, load_split

TRACK_COLOURS = ((255, 255, 255), (0, 0, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255))
CELL_SCALE = 2
GAP = 4
LABEL_HEIGHT = 12


def annotated_frame(split: AVISegSplit, video_id: int, t: int) -> Image.Image:
    video = split.video(video_id)
    frame = split.load_frames(video, [t])[0].astype(np.float32)  # (H, W, 3)
    labels: list[tuple[str, tuple[int, ...]]] = []  # (class name, RGB outline colour)
    for k, track in enumerate(split.tracks[video_id]):
        if track.segmentations[t] is None:
            continue
        mask = track.mask(t)
        colour = np.array(TRACK_COLOURS[k % len(TRACK_COLOURS)], np.float32)
        frame[mask & ~ndimage.binary_erosion(mask)] = colour  # outline only: colours stay true
        labels.append((split.categories[split.label(track.category_id)].name, tuple(int(c) for c in colour)))
    img = Image.fromarray(frame.clip(0, 255).astype(np.uint8)).resize((video.width * CELL_SCALE, video.height * CELL_SCALE), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (img.width, img.height + LABEL_HEIGHT), (40, 40, 40))
    canvas.paste(img, (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    x: float = 2
    text = f"t={t}" if labels else f"t={t} silent"
    draw.text((x, 0), text, fill=(200, 200, 200))
    x += draw.textlength(text) + 6
    for name, rgb in labels:
        draw.text((x, 0), name, fill=rgb if rgb != (0, 0, 0) else (150, 150, 150))
        x += draw.textlength(name) + 6
    return canvas


def contact_sheet(split: AVISegSplit, video_ids: list[int], frames_per_video: int) -> Image.Image:
    rows = []
    for vid in video_ids:
        length = split.video(vid).length
        times = np.linspace(0, length - 1, frames_per_video).round().astype(int)
        rows.append([annotated_frame(split, vid, int(t)) for t in times])
    cell_w, cell_h = rows[0][0].size
    sheet = Image.new("RGB", (frames_per_video * (cell_w + GAP) - GAP, len(rows) * (cell_h + GAP) - GAP), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            sheet.paste(cell, (c * (cell_w + GAP), r * (cell_h + GAP)))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="contact sheet of frames with GT masks")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--videos", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    split = load_split(args.root, args.split, check_files=False)
    contact_sheet(split, args.videos, args.frames).save(args.out, optimize=True)


if __name__ == "__main__":
    main()
