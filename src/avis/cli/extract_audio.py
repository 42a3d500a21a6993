"""`avis extract-audio`: write `<root>/<split>/FEATAudios/<video>.npy` for a whole split.

For each video of `<root>/<split>.json` (name = first path component of file_names[0]) the
soundtrack `<root>/<split>/WAVAudios/<video>.wav` (or, with --media-dir, the file
`<media-dir>/<video>.*`, any format PyAV reads) becomes a float32 (T, 128) array, T = the
video's number of frames (`length`): row i describes audio second [i, i+1). With --spatial
also `FEATSpatial/<video>.npy`, (T, 32, 16) maps of where each second's sound is (from the
first two channels; a mono soundtrack is heard at the centre).

Existing files are skipped unless --overwrite; each file is written atomically. The extractor
name is recorded in FEATAudios/extractor.json, and a run with a different extractor refuses to
mix features unless --overwrite. Without --weights the weight-free features are written
(per-band mean/std of the VGGish log-mel patch), NOT the VGGish embeddings AVIS used.

The video names come from the JSON and are checked like every data-set path (no absolute
names, no '..': `avis.data.paths`). A soundtrack shorter than its video's frames is padded
with silence and reported with the numbers (--short-audio pad, the default), or is a
failure of that video (--short-audio error).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from avis.cli import args as types
from avis.data.paths import check_split_name, video_folder
from avis.errors import DataError, MediaError
from avis.io.atomic import write_text_atomic

FEAT_DIR = "FEATAudios"
SPATIAL_DIR = "FEATSpatial"
WAV_DIR = "WAVAudios"
MARKER_FILE = "extractor.json"
MAX_LISTED_FAILURES = 10
VGGISH_PATCH_S = 0.975  # audio one feature row needs (the VGGish example window)
SHORT_AUDIO_POLICIES = ("pad", "error")

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoEntry:
    name: str
    num_frames: int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract-audio",
        help="compute the per-second audio features (FEATAudios/) of an AVISeg split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, required=True, help="data root holding <split>.json")
    parser.add_argument("--split", required=True, help="split name, e.g. train, val, test")
    parser.add_argument(
        "--extractor",
        choices=("weight_free", "vggish"),
        default=None,
        help="feature kind (default: vggish when --weights is given, else weight_free)",
    )
    parser.add_argument("--weights", type=Path, help="torchvggish weights (vggish-10086976.pth)")
    parser.add_argument(
        "--pca-params",
        type=Path,
        help="torchvggish PCA file: write PCA + 8-bit quantised embeddings (AVIS did not)",
    )
    parser.add_argument(
        "--media-dir", type=Path, help="folder of <video>.<ext> files used when a WAV is missing"
    )
    parser.add_argument("--overwrite", action="store_true", help="recompute existing files")
    parser.add_argument(
        "--spatial",
        action="store_true",
        help="also write FEATSpatial/<video>.npy: (T, 32, 16) maps of where the sound is, from "
        "the soundtrack's first two channels (for models with spatial audio; docs/audio.md)",
    )
    parser.add_argument(
        "--short-audio", choices=SHORT_AUDIO_POLICIES, default="pad",
        help="a soundtrack shorter than the video: pad with silence and warn, or fail that video",
    )  # fmt: skip
    parser.add_argument("--device", type=types.device, default="cpu", help="torch device for VGGish")
    parser.set_defaults(func=handler)


def read_split_videos(json_path: Path) -> list[VideoEntry]:
    """Video names and frame counts from a split's annotation JSON (only `videos` is read)."""
    if not json_path.is_file():
        raise DataError(f"{json_path}: annotation file not found")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, absurd nesting
        raise DataError(f"{json_path}: not valid JSON ({type(err).__name__}: {str(err)[:200]})") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list):
        raise DataError(f"{json_path}: expected a top-level object with a 'videos' list")
    entries = []
    for index, video in enumerate(videos):
        where = f"{json_path}: videos[{index}]"
        if not isinstance(video, dict):
            raise DataError(f"{where}: expected an object with 'file_names'")
        name = video_folder(video.get("file_names") or [], where)  # the data layer's path check
        length = video.get("length", len(video["file_names"]))
        if not isinstance(length, int) or isinstance(length, bool) or length != len(video["file_names"]):
            raise DataError(
                f"{where}.length: expected the number of file_names ({len(video['file_names'])}), found {length!r}"
            )
        entries.append(VideoEntry(name, length))
    return entries


def find_source(video: str, wav_dir: Path, media_dir: Path | None) -> Path:
    wav = wav_dir / f"{video}.wav"
    if wav.is_file():
        return wav
    if media_dir is not None and media_dir.is_dir():  # exact stem match: no glob patterns
        candidates = sorted(p for p in media_dir.iterdir() if p.stem == video and p.suffix and p.is_file())
        if candidates:
            return candidates[0]
    where = f"{wav}" + (f" or {media_dir}/{video}.*" if media_dir is not None else "")
    raise MediaError(f"video {video!r}: no soundtrack found (looked for {where})")


def _check_marker(feat_dir: Path, name: str, overwrite: bool) -> None:
    marker = feat_dir / MARKER_FILE
    if marker.is_file() and not overwrite:
        try:
            previous = json.loads(marker.read_text()).get("extractor")
        except (ValueError, AttributeError, OSError):
            raise DataError(f"{marker}: unreadable extractor marker; pass --overwrite to recompute the features") from None
        if previous != name:
            raise DataError(
                f"{feat_dir}: features there were made by the {previous!r} extractor, this run "
                f"uses {name!r}; pass --overwrite to recompute them all"
            )
    write_text_atomic(marker, json.dumps({"extractor": name}) + "\n")


def check_length(samples, rate: int, num_frames: int, where: str, policy: str) -> None:
    """Warn (policy 'pad') or raise (policy 'error') when the soundtrack does not cover every
    frame's one-second window: the missing rows become silence features."""
    seconds = samples.shape[0] / rate
    full_rows = max(0, min(num_frames, int((seconds - VGGISH_PATCH_S) // 1 + 1))) if seconds >= VGGISH_PATCH_S else 0
    if full_rows >= num_frames:
        return
    message = (
        f"{where}: {seconds:.2f} s of audio for a {num_frames}-frame video (needs "
        f"{num_frames - 1 + VGGISH_PATCH_S:.3f} s): {num_frames - full_rows} of {num_frames} "
        "feature rows are silence"
    )
    if policy == "error":
        raise MediaError(message + " (--short-audio error)")
    _LOG.warning("%s (padded; --short-audio error makes this a failure)", message)


def handler(args: argparse.Namespace) -> int:
    from avis.io.outputs import check_input_file, check_output_dir

    if args.media_dir is not None and not args.media_dir.is_dir():
        raise DataError(f"{args.media_dir}: --media-dir must be a folder")
    for option, path in (("--weights", args.weights), ("--pca-params", args.pca_params)):
        if path is not None:
            check_input_file(path, f"{option} file")
    if not args.root.is_dir():
        raise DataError(f"{args.root}: --root must be the data set folder (holding {args.split}.json)")
    videos = read_split_videos(args.root / f"{check_split_name(args.split)}.json")
    check_output_dir(args.root / args.split / FEAT_DIR, option=FEAT_DIR)
    import numpy as np
    from rich.progress import Progress

    from avis.audio.features import build_extractor
    from avis.audio.spatial import window_maps
    from avis.io.audio_file import load_audio
    from avis.io.npy import save_npy_atomic
    from avis.runtime import torch_device

    if args.weights is not None:
        torch_device(args.device)
    kind = args.extractor or ("vggish" if args.weights is not None else "weight_free")
    extractor = build_extractor(
        kind, weights=args.weights, pca_params=args.pca_params, device=args.device
    )
    split_dir = args.root / args.split
    feat_dir = split_dir / FEAT_DIR
    _check_marker(feat_dir, extractor.name, args.overwrite)
    written, skipped, failures = 0, 0, []
    with Progress() as progress:
        task = progress.add_task(f"{args.split}: {extractor.name} features", total=len(videos))
        for video in videos:
            out = feat_dir / f"{video.name}.npy"
            outputs = [out] + ([split_dir / SPATIAL_DIR / f"{video.name}.npy"] if args.spatial else [])
            if all(path.is_file() for path in outputs) and not args.overwrite:
                skipped += 1
            else:
                try:
                    source = find_source(video.name, split_dir / WAV_DIR, args.media_dir)
                    # the rows need num_frames seconds; 2 s more keep the resampler's edge away
                    samples, rate = load_audio(source, seconds=video.num_frames + 2.0)
                    check_length(samples, rate, video.num_frames, str(source), args.short_audio)
                    if args.overwrite or not out.is_file():
                        save_npy_atomic(out, extractor(samples, rate, video.num_frames))
                    if args.spatial:
                        outputs[1].parent.mkdir(exist_ok=True)
                        save_npy_atomic(outputs[1], window_maps(samples, rate, np.arange(video.num_frames)))
                    written += 1
                except (MediaError, DataError) as err:
                    failures.append(str(err))
                except OSError as err:  # this file only (a folder in its place, permissions)
                    failures.append(f"{out}: cannot be written ({err.strerror or err})")
            progress.advance(task)
    print(f"{feat_dir}: {written} written, {skipped} skipped (existing), {len(failures)} failed")
    for message in failures[:MAX_LISTED_FAILURES]:
        print(f"  failed: {message}")
    if len(failures) > MAX_LISTED_FAILURES:
        print(f"  ... and {len(failures) - MAX_LISTED_FAILURES} more")
    return 1 if failures else 0
