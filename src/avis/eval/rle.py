"""COCO run-length encodings: batched validation of compressed RLE strings, polygon rasterisation.

pycocotools trusts its input: a counts string whose runs do not add up to h*w is silently
misread. `checked_areas` decodes many strings at once with numpy (the same LEB128-like
code as pycocotools' `rleFrString`) so that bad entries are reported before any IoU is computed.

Letters: S strings, C characters (all strings concatenated), N run lengths (all strings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from pycocotools import mask as mask_utils

from avis.errors import DataError

# The counts string of an all-zero 720x1280 (or 1280x720) mask. The official evaluator
# recognises an empty prediction only by this literal (its quirk; see docs/evaluation.md).
OFFICIAL_EMPTY_COUNTS = "PPTl0"

_CHAR_OFFSET = 48  # pycocotools writes each 5-bit group as chr(48 + value)
_CHAR_RANGE = 64  # 5 data bits + 1 continuation bit
_MORE_BIT = 0x20  # continuation: another 5-bit group follows
_SIGN_BIT = 0x10  # on the last group of a number: the number is negative
_DATA_BITS = 0x1F
_BITS_PER_CHAR = 5
_MAX_CHARS_PER_RUN = 7  # 35 bits: more than any uint32 run length needs
_BATCH_CHARS = 1 << 16
_AREA_CHUNK = 255
_VALID_CHARS = bytes(range(_CHAR_OFFSET, _CHAR_OFFSET + _CHAR_RANGE))
# pycocotools rasterises a polygon by walking its edges at 5x resolution in C ints: a NaN,
# an infinity or a coordinate of 1e9 crashes the process (segfault / memory exhaustion).
# Real annotations stay within a few pixels of the frame; this margin is far beyond that.
# Frame sides beyond this are refused: pycocotools counts pixels in 32-bit integers.
MAX_FRAME_SIDE = 16384
POLYGON_MARGIN_FACTOR = 4
POLYGON_MARGIN_PX = 1000


def check_polygon_coords(polygons: Sequence, height: int, width: int) -> None:
    """Raise ValueError unless every coordinate is a finite number within
    POLYGON_MARGIN_FACTOR * max(height, width) + POLYGON_MARGIN_PX of the frame origin."""
    limit = POLYGON_MARGIN_FACTOR * max(height, width) + POLYGON_MARGIN_PX
    for k, poly in enumerate(polygons):
        try:
            values = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"polygon {k}: coordinates must be numbers") from None
        if values.ndim != 1:
            raise ValueError(f"polygon {k}: coordinates must be a flat list of numbers")
        if not np.isfinite(values).all():
            raise ValueError(f"polygon {k}: coordinates must be finite (found NaN or infinity)")
        if len(values) and np.abs(values).max() > limit:
            raise ValueError(
                f"polygon {k}: coordinate {values[np.argmax(np.abs(values))]:g} lies far outside "
                f"the {width}x{height} frame (limit +-{limit})"
            )


def rles_from_polygon_frames(frames: list[list], height: int, width: int) -> list[dict]:
    """Per frame, a list of polygons -> one compressed RLE per frame, as the official evaluator
    makes it: `frPyObjects` rasterises each polygon, `merge` takes their union. All polygons
    go through pycocotools in one call; only frames with several polygons need a merge.
    Raises ValueError for coordinates that are not finite numbers near the frame
    (`check_polygon_coords`: pycocotools would crash on them).
    """
    flat = [poly for polygons in frames for poly in polygons]
    if not flat:
        return []
    check_polygon_coords(flat, height, width)
    rles = mask_utils.frPyObjects(flat, height, width)
    out, first = [], 0
    for polygons in frames:
        n = len(polygons)
        out.append(rles[first] if n == 1 else mask_utils.merge(rles[first : first + n]))
        first += n
    return out


def area(rles: list[dict]) -> np.ndarray:
    """Pixel counts of many RLEs (pycocotools' `area` fails on lists longer than 255)."""
    if not rles:
        return np.zeros(0, dtype=np.int64)
    parts = [mask_utils.area(rles[i : i + _AREA_CHUNK]) for i in range(0, len(rles), _AREA_CHUNK)]
    return np.concatenate(parts).astype(np.int64)


def compress_counts(counts: list[int], height: int, width: int) -> dict:
    """An uncompressed RLE (list of run lengths) -> a compressed RLE dict."""
    return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)


def check_uncompressed_counts(counts: list, num_pixels: int) -> str | None:
    """Why a list of run lengths is not a valid RLE of `num_pixels` pixels, or None if it is."""
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return "counts list holds a value that is not an integer"
    if any(c < 0 for c in counts):
        return "counts list holds a negative run length"
    total = sum(counts)
    if total != num_pixels:
        return f"run lengths add up to {total} pixels, expected {num_pixels}"
    return None


def checked_areas(
    counts: Sequence[str],
    num_pixels: Sequence[int],
    describe: Callable[[int], str],
) -> np.ndarray:
    """(S,) foreground pixel counts of compressed RLE strings, checked on the way.

    Raises DataError for the first string that is not a valid RLE of its pixel count.

    `describe(i)` names the i-th entry (file, prediction, frame) for the message. The strings
    are checked in batches of about `_BATCH_CHARS` characters: numpy temporaries of that size are
    reused by the allocator instead of being mapped afresh, which is several times faster.
    """
    areas = np.zeros(len(counts), dtype=np.int64)
    first = 0
    while first < len(counts):
        last, chars = first, 0
        while last < len(counts) and (last == first or chars + len(counts[last]) <= _BATCH_CHARS):
            chars += len(counts[last])
            last += 1
        areas[first:last] = _check_batch(
            counts[first:last], num_pixels[first:last], partial(_shifted, describe, first)
        )
        first = last
    return areas


def _shifted(describe: Callable[[int], str], offset: int, index: int) -> str:
    """`describe` of a string's index in the whole list, given its index in a batch."""
    return describe(offset + index)


def _check_batch(
    counts: Sequence[str], num_pixels: Sequence[int], describe: Callable[[int], str]
) -> np.ndarray:
    areas = np.zeros(len(counts), dtype=np.int64)
    if not counts:
        return areas
    try:
        buf = "".join(counts).encode("ascii")
    except UnicodeEncodeError:
        bad = next(i for i, s in enumerate(counts) if not s.isascii())
        raise DataError(f"{describe(bad)}: RLE counts string has a non-ASCII character") from None

    def fail(string_index: int, why: str) -> None:
        raise DataError(f"{describe(int(string_index))}: malformed RLE counts string ({why})")

    if buf.translate(None, _VALID_CHARS):
        fail(next(i for i, s in enumerate(counts) if s.encode().translate(None, _VALID_CHARS)),
             "character outside '0'..'o'")
    lengths = np.fromiter((len(s) for s in counts), dtype=np.int64, count=len(counts))  # (S,)
    string_end = np.cumsum(lengths)  # (S,) one past the last character
    chars = np.frombuffer(buf, dtype=np.uint8)  # (C,)
    end_pos = np.flatnonzero(chars < _CHAR_OFFSET + _MORE_BIT)  # (N,) last character of each run
    nonempty = lengths > 0
    if len(end_pos) == 0:  # no character ends a run: every non-empty string is cut off
        fail(int(np.argmax(nonempty)), "the last run length is cut off" if nonempty.any() else "no run lengths")
    first_run = np.searchsorted(end_pos, string_end - lengths)  # (S,)
    last_run_end = end_pos[np.minimum(np.searchsorted(end_pos, string_end - 1), len(end_pos) - 1)]
    cut = nonempty & (last_run_end != string_end - 1)
    if cut.any():
        fail(int(np.argmax(cut)), "the last run length is cut off")

    # A run length is stored low 5-bit group first; its last character (at end_pos) holds the
    # top group and the sign. Continuation characters right before it belong to the same run.
    top = (chars[end_pos] - _CHAR_OFFSET) & _DATA_BITS  # (N,) uint8
    runs = (top ^ _SIGN_BIT).astype(np.int64) - _SIGN_BIT  # sign-extended top group
    more = np.flatnonzero(chars[np.maximum(end_pos - 1, 0)] >= _CHAR_OFFSET + _MORE_BIT)
    k = 1
    while len(more):  # the few runs longer than one character, one group at a time
        if k >= _MAX_CHARS_PER_RUN:
            fail(np.searchsorted(string_end, end_pos[more[0]], side="right"), "a run length is too long")
        lower = (chars[end_pos[more] - k] - _CHAR_OFFSET) & _DATA_BITS
        runs[more] = (runs[more] << _BITS_PER_CHAR) + lower
        k += 1
        before = end_pos[more] - k
        more = more[(before >= 0) & (chars[np.maximum(before, 0)] >= _CHAR_OFFSET + _MORE_BIT)]

    # Undo the delta coding: run m of a string (m >= 3) adds run m-2. Positions two apart in
    # the string are two apart in the concatenation too, so one running sum over the even and
    # one over the odd positions serve all strings: a decoded run is its running sum minus the
    # running sum just before its string starts (first runs are zeroed: they start no chain).
    string_ids = np.flatnonzero(nonempty)  # (S',)
    starts = first_run[string_ids]  # (S',) index of each string's first run
    string_of_run = np.repeat(
        np.arange(len(starts), dtype=np.int32), np.diff(starts, append=len(runs))
    )  # (N,) index into string_ids
    chained = runs.copy()
    chained[starts] = 0
    csum = np.empty_like(chained)
    csum[0::2] = np.cumsum(chained[0::2])
    csum[1::2] = np.cumsum(chained[1::2])
    # Running sum before each string, for the positions of its own parity and of the other.
    before = np.stack([csum[starts], np.where(starts > 0, csum[np.maximum(starts - 1, 0)], 0)], 1)
    odd = (np.arange(len(runs), dtype=np.int32) ^ starts.astype(np.int32)[string_of_run]) & 1
    decoded = csum - before.ravel()[2 * string_of_run + odd]
    decoded[starts] = runs[starts]
    if (decoded < 0).any():
        fail(string_ids[string_of_run[np.argmax(decoded < 0)]], "a negative run length")
    totals = np.zeros(len(counts), dtype=np.int64)
    totals[string_ids] = np.add.reduceat(decoded, starts)
    wrong = totals != np.asarray(num_pixels, dtype=np.int64)
    if wrong.any():
        i = int(np.argmax(wrong))
        fail(i, f"run lengths add up to {int(totals[i])} pixels, expected {int(num_pixels[i])}")
    areas[string_ids] = np.add.reduceat(decoded * odd, starts)  # odd runs are foreground
    return areas
