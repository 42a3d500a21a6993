"""Whole-video inference with AVISM, as the official procedure, in two variants.

``predict_video``: frame encoding in chunks keeping every frame's video mask features (what
the official code does; memory grows with T * Cm * Hm * Wm).
``predict_video_streaming``: memory-bounded. Pass 1 keeps only the frame queries (T * fQ * C);
after the video module, pass 2 recomputes each chunk's mask features (backbone + pixel
decoder, no frame decoder), adds up the mask scores and keeps, as compressed RLE, the masks of
every candidate that can still be kept: the final score is the class probability times a
mask score below 1, so only candidates whose class probability is above the threshold can
pass it. Same results as ``predict_video`` (chunks, sums and mask products are cut
identically), at the cost of one more image-encoder pass.

On a GPU ``predict_video`` can keep the mask features in pinned host memory instead
(``InferenceOptions.offload_features``): GPU memory then stays flat with the video's length.

Both take an ``encode(start, stop, with_queries, carry=None) -> ChunkEncoding`` function, so
the frames may come from memory, a decoder or precomputed backbone features (``frames_encoder``,
``features_encoder``). ``carry`` is the previous chunk's ``ChunkEncoding.carry``: models with
``carry_slots`` read the frames in order, each frame's slots starting from the previous
frame's, so pass 1 hands it from chunk to chunk (the memory-bounded pass 2 has no frame decoder).

Letters: T frames, t frames of a chunk, D audio size, fQ frame queries, C hidden size,
k candidates, N kept instances, h x w unpadded input, Hp x Wp padded input, H x W output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from avis.inference.postprocess import (
    SCORE_EPS,
    Candidates,
    MaskConfidence,
    binary_masks,
    block_embed,
    mask_confidence,
    rechunk,
    select_candidates,
)
from avis.inference.results import decode_rle, encode_mask
from avis.inference.spill import FeatureSpill
from avis.models.avism import AVISM, ChunkEncoding
from avis.models.config import AVISMConfig
from avis.models.frame_decoder import SlotCarry
from avis.models.peak_prior import PeakPrior


class ChunkEncoder(Protocol):
    """Encodes frames [start, stop) of a video; ``carry``: the previous chunk's slot state."""

    def __call__(
        self, start: int, stop: int, with_queries: bool, carry: SlotCarry | None = None
    ) -> ChunkEncoding: ...


@dataclass
class InferenceOptions:
    run_chunk_size: int = 18  # frames per image-encoder chunk
    interpolate_chunk_size: int = 5  # frames per mask upsampling block
    top_k: int = 100
    score_threshold: float = 0.3
    mask_prob_threshold: float = 0.5
    # standard path: keep every frame's mask features in (pinned, on CUDA) host memory and
    # bring them back block by block, so GPU memory stays flat with the video's length
    offload_features: bool = False

    @classmethod
    def from_config(cls, cfg: AVISMConfig) -> InferenceOptions:
        return cls(
            run_chunk_size=cfg.test_run_chunk_size,
            interpolate_chunk_size=cfg.test_interpolate_chunk_size,
            top_k=cfg.top_k,
            score_threshold=cfg.score_threshold,
            mask_prob_threshold=cfg.mask_prob_threshold,
        )


@dataclass
class VideoPrediction:
    """Instances of one video, in candidate order (class probability, highest first)."""

    scores: Tensor  # (N,) float32, class probability (x predicted mask IoU) x mask score
    labels: Tensor  # (N,) int64, class index 0..K-1
    masks: Tensor  # (N, T, H, W) bool
    query_indices: Tensor  # (N,) int64, the video query of each instance
    image_size: tuple[int, int]  # (H, W) of the masks


@dataclass
class InferenceTrace:
    """Intermediate values of one ``predict_video`` call (for checks and debugging)."""

    frame_logits: list[Tensor] = field(default_factory=list)  # per chunk (t, fQ, K+1)
    frame_masks: list[Tensor] = field(default_factory=list)  # per chunk (t, fQ, Hm, Wm)
    audio_fusion: list[Tensor] = field(default_factory=list)  # per chunk (fQ, t, C)
    frame_queries: Tensor | None = None  # (T, fQ, C)
    video: object | None = None  # VideoModuleOutput
    candidates: Candidates | None = None
    numerator: Tensor | None = None  # (k,)
    denominator: Tensor | None = None  # (k,)
    reweighted: Tensor | None = None  # (k,)
    keep_index: Tensor | None = None  # (N,) positions into the candidates


@dataclass
class _Selection:
    candidates: Candidates
    embed: Tensor  # (q, Cm) or (q, T, Cm) distinct candidate queries' mask embeddings
    inverse: Tensor  # (k,) candidate -> row of embed
    prior: PeakPrior | None = None  # the model's peak prior (an avis option), if it has one


def _check(model: AVISM, num_frames: int, audio: Tensor, options: InferenceOptions) -> None:
    if model.training:
        raise ValueError("inference needs the model in eval mode (model.eval())")
    if audio.dim() != 2 or audio.shape[0] != num_frames:
        raise ValueError(f"audio must be (T={num_frames}, D), got {tuple(audio.shape)}")
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if options.run_chunk_size < 1 or options.interpolate_chunk_size < 1:
        raise ValueError("chunk sizes must be >= 1")


def _pair(size: Sequence[int]) -> tuple[int, int]:
    """(h, w) as a tuple of two ints (a list or tensor shape is accepted)."""
    h, w = size
    return int(h), int(w)


def _frame_queries(enc: ChunkEncoding) -> Tensor:
    """The chunk's last-layer frame queries (the encoder was asked for them)."""
    if enc.frame_queries is None:
        raise RuntimeError("the chunk encoder returned no frame queries although they were asked for")
    return enc.frame_queries


def chunk_spans(num_frames: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of each image-encoder chunk of a video (the last may be shorter)."""
    return [(s, min(s + size, num_frames)) for s in range(0, num_frames, size)]




def _select(model: AVISM, frame_queries: Tensor, audio: Tensor, options, trace) -> _Selection:
    video = model.decode_video(frame_queries, audio.to(frame_queries.device))
    cands = select_candidates(video.pred_logits[-1, 0, 0], options.top_k)
    if video.pred_quality is not None:  # mask_quality models: class prob x predicted mask IoU
        quality = video.pred_quality[-1, 0, 0].float().sigmoid()  # (cQ,)
        cands = replace(cands, scores=cands.scores * quality[cands.query_index])
    unique, inverse = torch.unique(cands.query_index, return_inverse=True)
    if trace is not None:
        trace.frame_queries, trace.video, trace.candidates = frame_queries, video, cands
    embed = video.pred_mask_embed[-1, 0, 0][unique].float()
    return _Selection(cands, embed, inverse, model.video_module.peak_prior)


def _keep(sel: _Selection, conf, options, trace) -> tuple[Tensor, Tensor]:
    """-> (kept candidate positions (N,), final scores (N,))."""
    numerator, denominator = conf.numerator[sel.inverse], conf.denominator[sel.inverse]
    reweighted = sel.candidates.scores * numerator / (denominator + SCORE_EPS)
    keep = (reweighted > options.score_threshold).nonzero().flatten()
    if trace is not None:
        trace.numerator, trace.denominator = numerator, denominator
        trace.reweighted, trace.keep_index = reweighted, keep
    return keep, reweighted[keep]


def _possible_rows(sel: _Selection, options: InferenceOptions) -> Tensor:
    """Sorted distinct embed rows of the candidates that can pass the score threshold.

    A candidate's final score is its class probability times numerator / (denominator + eps)
    < 1, so a candidate whose class probability is not above the threshold is never kept.
    Both inference paths compute masks for exactly these rows (identical products)."""
    return torch.unique(sel.inverse[sel.candidates.scores > options.score_threshold])


def _pick(sel: _Selection, possible: Tensor, keep: Tensor) -> Tensor:
    """(N,) position of each kept candidate's embed row among the possible rows."""
    return torch.searchsorted(possible, sel.inverse[keep])


def _possible_masks(sel, possible, start, block, padded_size, input_size, out_size) -> Tensor:
    """Boolean masks (p, t, H, W) of the possible rows for the block of frames from ``start``."""
    embed = block_embed(sel.embed, start, block.shape[0])[possible]  # slice, then gather
    return binary_masks(embed, block, padded_size, input_size, out_size, sel.prior)


@torch.no_grad()
def predict_video(
    model: AVISM,
    encode: ChunkEncoder,
    audio: Tensor,
    input_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int] | None = None,
    options: InferenceOptions | None = None,
    trace: InferenceTrace | None = None,
) -> VideoPrediction:
    """The official procedure. audio (T, D); input_size = unpadded (h, w) of the network input."""
    options = options or InferenceOptions()
    num_frames = audio.shape[0]
    _check(model, num_frames, audio, options)
    out_hw = _pair(out_size if out_size is not None else input_size)
    queries: list[Tensor] = []
    features: list[Tensor] = []
    device = audio.device
    carry: SlotCarry | None = None
    for start, stop in chunk_spans(num_frames, options.run_chunk_size):
        enc = encode(start, stop, True, carry)
        carry = enc.carry
        queries.append(_frame_queries(enc))
        device = enc.mask_features.device
        features.append(offload(enc.mask_features) if options.offload_features else enc.mask_features)
        if trace is not None and enc.frame is not None:
            trace.frame_logits.append(enc.frame.pred_logits[-1])
            trace.frame_masks.append(enc.frame.pred_masks[-1])
            trace.audio_fusion.append(enc.frame.audio_fusion)
    sel = _select(model, torch.cat(queries), audio, options, trace)

    def blocks() -> Iterator[Tensor]:
        if not options.offload_features:
            return rechunk(features, options.interpolate_chunk_size)
        if device.type == "cuda":  # the device-to-host copies must land before the host reads
            torch.cuda.synchronize(device)
        host = rechunk(features, options.interpolate_chunk_size)
        return (block.to(device, non_blocking=True) for block in host)

    conf = mask_confidence(
        sel.embed, blocks(), padded_size, input_size, options.mask_prob_threshold, sel.prior
    )
    keep, scores = _keep(sel, conf, options, trace)
    possible = _possible_rows(sel, options)
    pick = _pick(sel, possible, keep)
    masks = torch.zeros((len(keep), num_frames, *out_hw), dtype=torch.bool)
    start = 0
    for block in blocks() if len(keep) else ():
        block_masks = _possible_masks(
            sel, possible, start, block, padded_size, input_size, out_hw
        )
        masks[:, start : start + block.shape[0]] = block_masks[pick].cpu()
        start += block.shape[0]
    return VideoPrediction(
        scores=scores.cpu(),
        labels=sel.candidates.labels[keep].cpu(),
        masks=masks,
        query_indices=sel.candidates.query_index[keep].cpu(),
        image_size=out_hw,
    )


@dataclass
class StreamedPrediction:
    """Scores and labels of the kept instances; masks come from ``chunks`` frame block by block."""

    scores: Tensor  # (N,)
    labels: Tensor  # (N,)
    query_indices: Tensor  # (N,)
    image_size: tuple[int, int]
    num_frames: int
    chunks: Iterator[tuple[int, Tensor]]  # (first frame, masks (N, t, H, W) bool)


@torch.no_grad()
def stream_video(
    model: AVISM,
    encode: ChunkEncoder,
    audio: Tensor,
    input_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int] | None = None,
    options: InferenceOptions | None = None,
    trace: InferenceTrace | None = None,
    spill: FeatureSpill | None = None,
) -> StreamedPrediction:
    """Memory-bounded inference: two passes over the frames; the kept masks are decoded from
    their RLE block by block by the returned iterator. Without ``spill`` the second pass
    recomputes the image features; with an (empty) ``FeatureSpill`` the first pass writes
    each chunk's mask features to it and the second reads them back (same values, one
    image-encoder pass). The caller closes the spill."""
    options = options or InferenceOptions()
    num_frames = audio.shape[0]
    _check(model, num_frames, audio, options)
    if spill is not None and len(spill):
        raise ValueError("stream_video needs an empty FeatureSpill")
    out_hw = _pair(out_size if out_size is not None else input_size)
    spans = chunk_spans(num_frames, options.run_chunk_size)
    queries: list[Tensor] = []
    carry: SlotCarry | None = None
    for start, stop in spans:  # pass 1
        enc = encode(start, stop, True, carry)
        carry = enc.carry
        queries.append(_frame_queries(enc))
        if spill is not None:
            spill.append(enc.mask_features)
        del enc
    sel = _select(model, torch.cat(queries), audio, options, trace)
    del queries
    # pass 2: mask scores of every candidate query, masks of the possible ones (as RLE)
    conf = MaskConfidence.zeros(sel.embed)
    possible = _possible_rows(sel, options)
    stored: list[list[dict]] = [[] for _ in range(len(possible))]  # [p][T] RLE
    block_sizes: list[int] = []
    if spill is None:
        features = (encode(start, stop, False).mask_features for start, stop in spans)
    else:
        device = sel.embed.device
        features = (chunk.to(device) for chunk in spill)
    start = 0
    for block in rechunk(features, options.interpolate_chunk_size):
        embed = block_embed(sel.embed, start, block.shape[0])
        conf.add(embed, block, padded_size, input_size, options.mask_prob_threshold, sel.prior)
        if len(possible):
            block_masks = _possible_masks(
                sel, possible, start, block, padded_size, input_size, out_hw
            )
            for row, track in enumerate(block_masks.cpu().numpy()):
                stored[row].extend(encode_mask(frame) for frame in track)
        block_sizes.append(block.shape[0])
        start += block.shape[0]
    keep, scores = _keep(sel, conf, options, trace)
    pick = _pick(sel, possible, keep).tolist()
    kept = [stored[row] for row in pick]
    del stored

    def mask_chunks() -> Iterator[tuple[int, Tensor]]:
        start = 0
        for size in block_sizes if len(keep) else ():
            block = torch.zeros((len(kept), size, *out_hw), dtype=torch.bool)
            for i, track in enumerate(kept):
                for offset in range(size):
                    block[i, offset] = torch.from_numpy(decode_rle(track[start + offset]))
            yield start, block
            start += size

    return StreamedPrediction(
        scores=scores.cpu(),
        labels=sel.candidates.labels[keep].cpu(),
        query_indices=sel.candidates.query_index[keep].cpu(),
        image_size=out_hw,
        num_frames=num_frames,
        chunks=mask_chunks(),
    )


def predict_video_streaming(*args, **kwargs) -> VideoPrediction:
    """``stream_video`` with the mask blocks collected into one (N, T, H, W) tensor."""
    streamed = stream_video(*args, **kwargs)
    masks = torch.zeros(
        (len(streamed.scores), streamed.num_frames, *streamed.image_size), dtype=torch.bool
    )
    for start, block in streamed.chunks:
        masks[:, start : start + block.shape[1]] = block
    return VideoPrediction(
        streamed.scores, streamed.labels, masks, streamed.query_indices, streamed.image_size
    )


def offload(x: Tensor) -> Tensor:
    """A copy of ``x`` in host memory: pinned, copied without blocking, when ``x`` is on a GPU."""
    if x.device.type == "cpu":
        return x
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    return host.copy_(x, non_blocking=True)


# ---------------------------------------------------------------------- encoders
def pad_frames(frames: Tensor, divisibility: int) -> Tensor:
    """(..., H, W) -> zero-padded bottom/right to multiples of ``divisibility``."""
    h, w = frames.shape[-2:]
    div = max(divisibility, 1)
    return F.pad(frames, (0, -w % div, 0, -h % div))


def frames_encoder(
    model: AVISM, frames: Tensor, audio: Tensor
) -> tuple[ChunkEncoder, tuple, tuple]:
    """Encoder over frames in memory: frames (T, 3, h, w) RGB 0..255 (any dtype), audio (T, D).

    Returns (encode, input_size (h, w), padded_size (Hp, Wp)). Each chunk is padded and
    converted to float on demand.
    """
    h, w = frames.shape[-2:]
    div = model.size_divisibility
    padded = (h + (-h % div), w + (-w % div))
    device = model.pixel_mean.device

    def encode(start: int, stop: int, with_queries: bool, carry: SlotCarry | None = None) -> ChunkEncoding:
        chunk = pad_frames(frames[start:stop].to(device=device, dtype=torch.float32), div)
        return model.encode_chunk(chunk, audio[start:stop].to(device), (h, w), with_queries, carry)

    return encode, (h, w), padded


def features_encoder(model: AVISM, features: Mapping[str, Tensor], audio: Tensor) -> ChunkEncoder:
    """Encoder over precomputed backbone maps res2..res5 (T, C_k, h_k, w_k) (backbone skipped)."""

    def encode(start: int, stop: int, with_queries: bool, carry: SlotCarry | None = None) -> ChunkEncoding:
        chunk = {name: f[start:stop] for name, f in features.items()}
        return model.encode_chunk_features(chunk, audio[start:stop], with_queries, carry=carry)

    return encode


def predict_frames(
    model: AVISM,
    frames: Tensor,
    audio: Tensor,
    out_size: tuple[int, int] | None = None,
    options: InferenceOptions | None = None,
    streaming: bool = False,
) -> VideoPrediction:
    """Frames (T, 3, h, w) RGB 0..255 at the network input size, audio (T, D) -> prediction."""
    encode, input_size, padded = frames_encoder(model, frames, audio)
    run = predict_video_streaming if streaming else predict_video
    return run(model, encode, audio, input_size, padded, out_size, options)
