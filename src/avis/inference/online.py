"""Online (live-stream) inference: AVISM over a sliding window, tracks linked across windows.

AVISM is offline: its video queries attend to every frame. `OnlinePredictor` runs the same
weights on a stream, frame by frame, with a bounded latency:

1. each new frame (and its second of audio features) goes once through the image encoder
   (backbone, pixel decoder, frame decoder); its frame queries and mask features enter a ring
   buffer of the last `window` frames;
2. the video module runs over the buffer (frames n-S+1 .. n): its video queries are scored
   like offline (class probability x mask score over the window's frames, kept above the
   score threshold);
3. the kept queries are linked to the stream's tracks (`TrackLinker`): Hungarian matching on
   mask overlap over the frames both windows share plus the similarity of the query
   embeddings; a window query that matches no live track is compared with the tracks that
   have gone quiet (same class, similar embedding), so a source that stops sounding and
   comes back keeps its id; otherwise it opens a new track;
4. frame t = n - L (L = `latency`) is final: the masks of the tracks matched in window n are
   computed at the original size for that frame and emitted (`OnlineFrame`), optionally split
   into one track per separate blob (`OnlineSplitter`, the online form of
   `avis.inference.components`).

State is a fixed number of frames (the window), a bounded number of tracks (live ones + at
most `max_dormant` quiet ones) and per track a few vectors: memory and compute per frame do
not grow with the stream. A track's class is the argmax of its class probabilities summed
over the windows it was kept in; its score is the mean of those windows' scores (what the
per-second records carry, and the final results).

Letters: S window frames, L latency (frames), fQ frame queries, cQ video queries, C hidden
size, Cm mask-embedding size, K classes, Hm x Wm stride-4 grid, h x w network input size,
Hp x Wp padded input, H x W original frame size, J kept window tracks, G tracks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from avis.errors import MediaError
from avis.inference import components
from avis.inference.postprocess import (
    SCORE_EPS,
    MaskConfidence,
    binary_masks,
    low_res_mask_logits,
    valid_grid,
)
from avis.inference.predictor import VideoPredictor
from avis.models.frame_decoder import SlotCarry
from avis.models.peak_prior import PeakPrior
from avis.precision import precision_context

NEG_INF = -1e9  # Hungarian cost of a forbidden pair


@dataclass
class OnlineOptions:
    """Settings of the online mode (frames = seconds at the AVIS rate of 1 fps)."""

    latency: int = 3  # L: frame t is emitted once frame t + L has arrived
    window: int = 0  # S: frames the video module sees; 0 = max(2 x model window, L + 1)
    min_similarity: float = 0.35  # a window query continues a live track above this
    reid_similarity: float = 0.6  # ... a quiet (dormant) track above this (same class only)
    iou_weight: float = 0.6  # similarity = w x mask IoU on shared frames + (1 - w) x embedding cosine
    max_dormant: int = 64  # quiet tracks kept for re-identification (oldest forgotten first)

    def resolved_window(self, model_window: int) -> int:
        window = self.window or max(2 * max(model_window, 1), self.latency + 1)
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 frames, got {self.latency}")
        if window < self.latency + 1:
            raise ValueError(f"window ({window} frames) must be at least latency + 1 = {self.latency + 1}")
        return window


@dataclass
class OnlineFrame:
    """The instances of one frame, emitted `latency` frames after it arrived."""

    index: int  # frame number, 0-based
    time: float  # seconds: index / fps
    track_ids: np.ndarray  # (N,) int64, stable over the stream (1, 2, ...)
    scores: np.ndarray  # (N,) float32, each track's mean window score so far
    labels: np.ndarray  # (N,) int64 class index 0..K-1, each track's class so far
    masks: np.ndarray  # (N, H, W) bool; empty where the instance is silent

    @property
    def sounding(self) -> np.ndarray:  # (N,) bool
        return np.asarray(self.masks.any(axis=(1, 2)))


@dataclass
class WindowTrack:
    """A video query kept in one window."""

    query: int  # index of the video query
    label: int  # best class
    score: float  # class probability x mask score (x predicted IoU) over the window
    probs: np.ndarray  # (K,) class probabilities
    embed: np.ndarray  # (C,) unit-norm query embedding (for linking)
    masks: np.ndarray  # (S, Hm, Wm) bool, low-resolution masks over the window's frames


@dataclass(eq=False)
class Track:
    """One track of the stream (state kept between windows: a few vectors + S small masks)."""

    track_id: int
    prob_sum: np.ndarray  # (K,) class probabilities summed over the windows it was kept in
    score_sum: float
    windows: int  # windows it was kept in
    embed: np.ndarray  # (C,) unit-norm embedding, running mean
    first_frame: int  # first frame of `masks`
    masks: np.ndarray  # (S', Hm, Wm) bool, its masks over its last window
    last_step: int  # last window (= its last frame) in which it was kept

    @property
    def label(self) -> int:
        return int(self.prob_sum.argmax())

    @property
    def score(self) -> float:
        return self.score_sum / max(self.windows, 1)

    def update(self, wt: WindowTrack, first_frame: int, step: int) -> None:
        self.prob_sum = self.prob_sum + wt.probs
        self.score_sum += wt.score
        self.windows += 1
        embed = self.embed * (self.windows - 1) + wt.embed
        self.embed = embed / max(float(np.linalg.norm(embed)), 1e-12)
        self.first_frame, self.masks, self.last_step = first_frame, wt.masks, step


def _shared_iou(track: Track, wt: WindowTrack, first_frame: int) -> float | None:
    """Mask IoU over the frames both windows hold; None when both are empty there."""
    start = max(track.first_frame, first_frame)
    stop = min(track.first_frame + len(track.masks), first_frame + len(wt.masks))
    if stop <= start:
        return None
    a = track.masks[start - track.first_frame : stop - track.first_frame]
    b = wt.masks[start - first_frame : stop - first_frame]
    union = int((a | b).sum())
    if union == 0:
        return None
    return int((a & b).sum()) / union


class TrackLinker:
    """Links the kept queries of successive windows into tracks with stable ids."""

    def __init__(self, options: OnlineOptions) -> None:
        self.options = options
        self.live: list[Track] = []  # kept in the previous window
        self.dormant: deque[Track] = deque(maxlen=options.max_dormant)
        self.next_id = 1

    def link(self, kept: list[WindowTrack], first_frame: int, step: int) -> list[Track]:
        """The track of each kept window query (same order).

        One Hungarian assignment over every known track: where the two hold masks on shared
        frames, similarity = w x IoU + (1 - w) x cosine, accepted above `min_similarity`;
        otherwise (a quiet track, or both silent there) only a track of the same class with
        cosine above `reid_similarity` can continue."""
        opts = self.options
        pool = self.live + list(self.dormant)
        out: list[Track | None] = [None] * len(kept)
        if kept and pool:
            sim = np.full((len(pool), len(kept)), NEG_INF)
            for g, track in enumerate(pool):
                for j, wt in enumerate(kept):
                    cos = float(track.embed @ wt.embed)
                    iou = _shared_iou(track, wt, first_frame)
                    if iou is not None:
                        value = opts.iou_weight * iou + (1 - opts.iou_weight) * cos
                        if value >= opts.min_similarity:
                            sim[g, j] = value
                    elif track.label == wt.label and cos >= opts.reid_similarity:
                        sim[g, j] = cos
            rows, cols = linear_sum_assignment(-sim)
            for g, j in zip(rows, cols):
                if sim[g, j] > NEG_INF:
                    out[j] = pool[g]
        continued = {id(t) for t in out if t is not None}
        for track in self.live:
            if id(track) not in continued:
                self.dormant.append(track)  # the oldest quiet track goes when full
        for found in out:
            if found is not None and found in self.dormant:
                self.dormant.remove(found)
        tracks: list[Track] = []
        for j, wt in enumerate(kept):
            match = out[j]
            if match is None:
                match = Track(
                    self.next_id, np.zeros_like(wt.probs), 0.0, 0, wt.embed, first_frame, wt.masks, step
                )
                self.next_id += 1
            match.update(wt, first_frame, step)
            tracks.append(match)
        self.live = tracks
        return tracks


@dataclass
class _SubTracks:
    """Component splitting state of one track."""

    ids: list[int]  # sub-track ids; ids[0] is the track's own id
    positions: np.ndarray | None = None  # (k, 2) last centroid of each sub-track
    counts: dict[int, int] = field(default_factory=dict)  # major-blob count -> non-empty frames


class OnlineSplitter:
    """`avis.inference.components` for a stream: a track becomes k tracks when at least
    `min_frame_share` of its non-empty frames so far (and of the look-ahead frames) hold k
    major blobs; blobs are matched to sub-tracks by centroid distance, frame after frame.
    Sub-track 0 keeps the track's id, the others get new ids (kept while the track lives)."""

    def __init__(self, options: components.SplitOptions, new_id) -> None:
        self.options = options
        self.new_id = new_id  # () -> a fresh track id
        self.state: dict[int, _SubTracks] = {}

    def forget(self, live_ids: set[int], keep: int) -> None:
        """Drop the state of tracks no longer known (bounded memory)."""
        if len(self.state) > keep:
            for track_id in [t for t in self.state if t not in live_ids][: len(self.state) - keep]:
                del self.state[track_id]

    def split(self, track_id: int, mask: np.ndarray, lookahead: list[int]) -> list[tuple[int, np.ndarray]]:
        """One track's (H, W) mask of the emitted frame -> [(sub-track id, mask)].

        lookahead: the major-blob counts of its masks in the window's later frames."""
        state = self.state.setdefault(track_id, _SubTracks([track_id]))
        blobs = components.frame_blobs(mask, self.options.min_blob_fraction)
        count = len(blobs.major)
        if count:
            state.counts[count] = state.counts.get(count, 0) + 1
        k = _num_parts(state.counts, [c for c in lookahead if c], self.options.min_frame_share)
        k = max(k, len(state.ids) if state.positions is not None else 1)  # never merge sub-tracks back
        if k < 2:
            return [(track_id, mask)]
        if state.positions is None or len(state.positions) < k:
            if count < k:  # wait for a frame that shows all k parts before splitting
                if state.positions is None:
                    return [(track_id, mask)]
                k = len(state.positions)
            else:
                old = state.positions
                state.ids += [self.new_id() for _ in range(k - len(state.ids))]
                major = blobs.centroids[blobs.major]
                if old is None:
                    state.positions = major[:k].copy() if count == k else _farthest(major, k)
                else:  # keep the old sub-tracks where they are, add the farthest new blobs
                    state.positions = np.concatenate([old, _farthest_from(major, old, k - len(old))])
        parts, state.positions = components.assign_blobs(blobs, state.positions, k)
        return list(zip(state.ids[:k], parts))


def _num_parts(counts: dict[int, int], extra: list[int], min_frame_share: float) -> int:
    """`components.num_parts` from a histogram {blob count: frames} plus a few more counts."""
    hist = dict(counts)
    for c in extra:
        hist[c] = hist.get(c, 0) + 1
    total = sum(hist.values())
    k = 1
    for c in range(2, max(hist, default=1) + 1):
        if sum(n for count, n in hist.items() if count >= c) / max(total, 1) >= min_frame_share:
            k = c
    return k


def _farthest(points: np.ndarray, k: int) -> np.ndarray:
    """k of the points, the first one then greedily the farthest from those chosen."""
    chosen = [0]
    while len(chosen) < k:
        dist = ((points[:, None] - points[chosen][None]) ** 2).sum(-1).min(1)
        chosen.append(int(dist.argmax()))
    return points[chosen].copy()


def _farthest_from(points: np.ndarray, old: np.ndarray, n: int) -> np.ndarray:
    dist = ((points[:, None] - old[None]) ** 2).sum(-1).min(1)
    return points[np.argsort(-dist)[:n]].copy()


class OnlinePredictor:
    """Frame-by-frame AVISM with bounded latency (module doc). Feed `push(frame, audio)`,
    collect the `OnlineFrame`s it returns, call `flush()` at the end of the stream."""

    def __init__(self, predictor: VideoPredictor, options: OnlineOptions | None = None, fps: float = 1.0) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.options = options or OnlineOptions()
        self.window = self.options.resolved_window(predictor.config.window_size)
        self.latency = self.options.latency
        self.fps = fps
        self.reset()

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    def reset(self) -> None:
        """Forget the stream: the next frame is frame 0, track ids start at 1 again."""
        self.buffer: deque[tuple[Tensor, Tensor, Tensor]] = deque(maxlen=self.window)  # (fQ, C), (Cm, Hm, Wm), (D,)
        self.frame_shape: tuple[int, ...] | None = None
        self.num_frames = 0  # frames pushed
        self.num_emitted = 0
        self.carry: SlotCarry | None = None  # the last frame's slots (carry_slots models)
        self.linker = TrackLinker(self.options)
        split = self.predictor.split
        self.splitter = None if split is None else OnlineSplitter(split, self._new_id)
        # (first frame of the window, tracks, their window tracks) of the latest window
        self.latest: tuple[int, list[Track], list[WindowTrack], Tensor | None] | None = None

    def _new_id(self) -> int:
        track_id = self.linker.next_id
        self.linker.next_id += 1
        return track_id

    # ------------------------------------------------------------------ stream
    @torch.no_grad()
    def push(self, frame: np.ndarray, audio: np.ndarray) -> list[OnlineFrame]:
        """frame (H, W, 3) uint8 RGB, audio (D,) its second's features -> frames now final."""
        frame = np.asarray(frame)
        audio = np.asarray(audio, dtype=np.float32)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise MediaError(f"frame {self.num_frames}: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        if self.frame_shape is None:
            self.frame_shape = frame.shape
        elif frame.shape != self.frame_shape:
            raise MediaError(f"frame {self.num_frames}: size {frame.shape[:2]} differs from the stream's {self.frame_shape[:2]}")
        want = self.predictor.config.input_audio_dim  # D, + the flattened spatial map (spatial_audio models)
        if audio.shape != (want,):
            raise MediaError(f"frame {self.num_frames}: expected audio features ({want},), got {audio.shape}")
        audio_t = torch.from_numpy(audio)[None]
        with self._precision():
            encode, self.input_size, self.padded = self.predictor.encoder(frame[None], audio_t)
            enc = encode(0, 1, True, self.carry)
            self.carry = enc.carry  # carry_slots models: this frame's slots start the next
            assert enc.frame_queries is not None, "asked for frame queries"
            self.buffer.append((enc.frame_queries[0], enc.mask_features[0], audio_t[0].to(enc.frame_queries.device)))
            self.num_frames += 1
            self._step()
            out = []
            if self.num_frames - 1 - self.latency >= 0:
                out.append(self._emit(self.num_frames - 1 - self.latency))
        return out

    @torch.no_grad()
    def flush(self) -> list[OnlineFrame]:
        """The end of the stream: the last L frames, from the last window."""
        with self._precision():
            return [self._emit(t) for t in range(self.num_emitted, self.num_frames)]

    def _precision(self):
        """The predictor's numeric precision (autocast, TF32 switches), as offline runs use it."""
        return precision_context(self.predictor.precision, self.predictor.device)

    def run(self, frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[OnlineFrame]:
        """(frame, audio features) pairs -> every frame's OnlineFrame, in order."""
        self.reset()
        for frame, audio in frames:
            yield from self.push(frame, audio)
        yield from self.flush()

    # ------------------------------------------------------------------ internals
    def _step(self) -> None:
        """Video module over the buffer, scoring, linking (the window ending at the newest frame)."""
        queries = torch.stack([b[0] for b in self.buffer])  # (S, fQ, C)
        features = torch.stack([b[1] for b in self.buffer])  # (S, Cm, Hm, Wm)
        audio = torch.stack([b[2] for b in self.buffer])  # (S, D)
        first = self.num_frames - len(self.buffer)
        video = self.model.decode_video(queries, audio)
        opts = self.predictor.options
        probs = video.pred_logits[-1, 0, 0].float().softmax(-1)[:, :-1]  # (cQ, K)
        best, labels = probs.max(-1)
        if video.pred_quality is not None:
            best = best * video.pred_quality[-1, 0, 0].float().sigmoid()
        possible = (best > opts.score_threshold).nonzero().flatten()  # (q,)
        embed_all = video.pred_mask_embed[-1, 0, 0]  # (cQ, Cm) or (cQ, S, Cm)
        kept: list[WindowTrack] = []
        keep_embed = None
        if len(possible):
            embed = embed_all[possible]
            conf = MaskConfidence.zeros(embed)
            prior = self.model.video_module.peak_prior
            conf.add(embed, features, self.padded, self.input_size, opts.mask_prob_threshold, prior)
            scores = best[possible] * conf.numerator / (conf.denominator + SCORE_EPS)
            keep = (scores > opts.score_threshold).nonzero().flatten()
            if len(keep):
                keep_embed = embed[keep]
                low = _low_res_masks(keep_embed, features, self.padded, self.input_size, prior)
                link_embed = _link_embed(video, possible[keep], embed_all)
                for i, row in enumerate(keep.tolist()):
                    q = int(possible[row])
                    kept.append(WindowTrack(
                        query=q, label=int(labels[q]), score=float(scores[row]),
                        probs=probs[q].cpu().numpy().astype(np.float64), embed=link_embed[i],
                        masks=low[i].cpu().numpy(),
                    ))  # fmt: skip
        tracks = self.linker.link(kept, first, self.num_frames - 1)
        self.latest = (first, tracks, kept, keep_embed)

    def _emit(self, t: int) -> OnlineFrame:
        """Frame t's instances from the latest window (which holds frame t)."""
        assert self.latest is not None and self.frame_shape is not None
        first, tracks, kept, embed = self.latest
        out_size = (int(self.frame_shape[0]), int(self.frame_shape[1]))
        features = self.buffer[t - first][1][None]  # (1, Cm, Hm, Wm)
        ids: list[int] = []
        scores: list[float] = []
        labels: list[int] = []
        masks: list[np.ndarray] = []
        if tracks:
            assert embed is not None
            frame_embed = embed if embed.dim() == 2 else embed[:, t - first : t - first + 1]
            prior = self.model.video_module.peak_prior
            full = binary_masks(
                frame_embed, features, self.padded, self.input_size, out_size, prior
            )[:, 0]
            full_np = full.cpu().numpy()
            for i, track in enumerate(tracks):
                parts = [(track.track_id, full_np[i])]
                if self.splitter is not None:
                    lookahead = [
                        _major_count(m, self.splitter.options) for m in kept[i].masks[t - first + 1 :]
                    ]
                    parts = self.splitter.split(track.track_id, full_np[i], lookahead)
                for track_id, mask in parts:
                    ids.append(track_id)
                    scores.append(track.score)
                    labels.append(track.label)
                    masks.append(mask)
        if self.splitter is not None:
            known = {t_.track_id for t_ in tracks} | {t_.track_id for t_ in self.linker.dormant}
            self.splitter.forget(known, len(known))
        self.num_emitted = t + 1
        return OnlineFrame(
            index=t,
            time=t / self.fps,
            track_ids=np.asarray(ids, dtype=np.int64),
            scores=np.asarray(scores, dtype=np.float32),
            labels=np.asarray(labels, dtype=np.int64),
            masks=np.stack(masks) if masks else np.zeros((0, *out_size), dtype=bool),
        )


def _low_res_masks(
    embed: Tensor,
    features: Tensor,
    padded: tuple[int, int],
    input_size: tuple[int, int],
    prior: PeakPrior | None = None,
) -> Tensor:
    """Binary masks on the stride-4 grid of the unpadded input: (J, S, hm, wm) bool."""
    logits = low_res_mask_logits(embed, features, padded, input_size, prior)
    hm, wm = valid_grid(tuple(logits.shape[-2:]), padded, input_size)
    return logits[..., :hm, :wm] > 0


def _link_embed(video, queries: Tensor, embed_all: Tensor) -> list[np.ndarray]:
    """Unit-norm embeddings of the given queries for linking: the similarity head's
    (sim_embed_clip, trained to match a track with its frames) when the model has it, else
    the mask embedding (averaged over frames when per frame)."""
    if video.pred_cq_embed is not None:
        vectors = video.pred_cq_embed[-1, 0, 0][queries]  # (J, C)
    else:
        vectors = embed_all[queries]
        vectors = vectors.mean(1) if vectors.dim() == 3 else vectors
    vectors = F.normalize(vectors.float(), dim=-1)
    return list(vectors.cpu().numpy().astype(np.float64))


def _major_count(mask: np.ndarray, options: components.SplitOptions) -> int:
    return len(components.frame_blobs(mask, options.min_blob_fraction).major)
