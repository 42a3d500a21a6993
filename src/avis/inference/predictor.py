"""`VideoPredictor`: an AVISM model + its audio features, applied to any video.

    from avis import VideoPredictor
    predictor = VideoPredictor.from_checkpoint()            # the shipped tiny checkpoint
    prediction = predictor.predict("clip.mp4")              # -> Prediction
    for frame in predictor.stream("clip.mp4"):              # -> FrameResult per frame
        ...

Frames are resized like the official test transform (short side `test_short_side`, long side
at most `test_max_size`), one chunk at a time; masks come back at the original size.
Memory: `streaming=True` keeps only the frame queries of the whole video in RAM and needs
every frame's mask features a second time, for the mask scores and masks: it reads them back
from a temporary file written in the first pass (`spill_dir`, default the system temporary
folder; `avis.inference.spill`) or, when `spill=False` or that disk lacks the room,
recomputes them (a second image-encoder pass); `streaming=False` keeps every frame's mask
features in RAM (the official procedure); "auto" (default) streams when those features would
exceed `feature_budget_mb`. All give identical masks (scores equal up to float rounding: on
the CPU the memory-bounded path encodes `streaming_chunk_size` = 6 frames per call, which
bounds its peak memory, and a convolution over another batch size may round differently).
On CUDA, "auto" keeps the standard path and offloads the mask features to pinned host memory
when they exceed `feature_budget_mb` of GPU memory (`offload_features`), streaming only past
`host_feature_budget_mb`.

Precision (`precision`, `avis.precision`): "fp32" (strict, the CPU default), "tf32", "bf16"
(the provisional CUDA default), "fp16". GPU habits, on by default on CUDA only (CPU runs are
unchanged): chunks of a fixed shape (`static_chunks`: the last chunk is padded with copies
of its last frame and the padding's outputs dropped; frames are encoded independently, so
outputs are unchanged), frames read ahead by a background thread into pinned memory
(`prefetch`, `avis.inference.prefetch`) and copied to the GPU without blocking.

Letters: T frames, t frames of a chunk, D audio size, N kept instances, H x W original size,
h x w network input size, Hp x Wp padded input size.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from avis.audio.features import WeightFreeExtractor
from avis.data.transforms import resized_size
from avis.errors import CheckpointError, MediaError
from avis.inference import components
from avis.inference.prediction import FrameResult, Prediction, PredictionBuilder
from avis.inference.prefetch import ChunkPrefetcher
from avis.inference.shipped import VGGISH, WEIGHT_FREE, ModelInfo, model_info, shipped_checkpoint
from avis.inference.spill import FeatureSpill, spill_fits
from avis.inference.video import (
    InferenceOptions,
    chunk_spans,
    pad_frames,
    predict_video,
    stream_video,
)
from avis.models.avism import AVISM, ChunkEncoding
from avis.models.config import PRESETS, AVISMConfig
from avis.models.frame_decoder import FrameDecoderOutput, SlotCarry
from avis.precision import autocast_dtype, precision_context, resolve_precision

log = logging.getLogger(__name__)

Streaming = bool | Literal["auto"]
PRECOMPUTED = "precomputed"
DEFAULT_FEATURE_BUDGET_MB = 1024.0
DEFAULT_HOST_FEATURE_BUDGET_MB = 16384.0  # CUDA: offloaded features beyond this -> streaming
BYTES_PER_FLOAT = 4
BYTES_PER_REDUCED = 2  # mask features under bf16 (fp16 keeps the pixel decoder in fp32)
PREFETCH_DEPTH = 2  # chunks read ahead
# CPU, memory-bounded path: frames per image-encoder call. Per-chunk tensors set its peak
# memory (R50 360p, T = 60, peak RSS: 2474 / 1626 / 1336 MB at 18 / 9 / 6 frames per call,
# and no slower: docs/benchmarks.md, "Long videos"); the frames are encoded independently,
# so outputs are the same. GPUs keep the config's chunk size.
STREAMING_CHUNK_CPU = 6
STRIDE = 4  # mask features are at stride 4 of the padded input


class VideoPredictor:
    """A loaded model ready for videos. Build it with `from_checkpoint`."""

    def __init__(
        self,
        model: AVISM,
        config: AVISMConfig,
        info: ModelInfo,
        *,
        extractor=None,
        device: str | torch.device = "cpu",
        threshold: float | None = None,
        split_components: bool | None = None,
        streaming: Streaming = "auto",
        feature_budget_mb: float = DEFAULT_FEATURE_BUDGET_MB,
        spill: bool = True,
        spill_dir: str | Path | None = None,
        precision: str | None = None,
        static_chunks: bool | None = None,
        prefetch: bool | None = None,
        host_feature_budget_mb: float = DEFAULT_HOST_FEATURE_BUDGET_MB,
        streaming_chunk_size: int | None | Literal["auto"] = "auto",
    ) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.info = info
        self.device = torch.device(device)
        self.extractor = extractor if extractor is not None else WeightFreeExtractor()
        self.options = InferenceOptions.from_config(config)
        if threshold is not None:
            self.options.score_threshold = float(threshold)
        for name in ("score_threshold", "mask_prob_threshold"):  # NaN would keep nothing, silently
            value = getattr(self.options, name)
            if not 0.0 <= value <= 1.0:
                raise CheckpointError(f"{info.source}: {name} must be in [0, 1], found {value}")
        split = config.split_components if split_components is None else split_components
        self.split: components.SplitOptions | None = (
            components.SplitOptions(config.split_min_blob_fraction, config.split_min_frame_share)
            if split
            else None
        )  # None: tracks are kept as the model predicts them
        self.streaming = streaming
        self.feature_budget_mb = feature_budget_mb
        self.spill, self.spill_dir = spill, spill_dir
        on_gpu = self.device.type == "cuda"
        self.precision = resolve_precision(precision, self.device)  # None -> the device default
        self.static_chunks = on_gpu if static_chunks is None else static_chunks
        self.prefetch = on_gpu if prefetch is None else prefetch
        self.host_feature_budget_mb = host_feature_budget_mb
        if streaming_chunk_size == "auto":
            streaming_chunk_size = None if on_gpu else STREAMING_CHUNK_CPU
        self.streaming_chunk_size = streaming_chunk_size  # None: the config's chunk size
        if info.audio_features is not None and info.audio_features != self.extractor.name:
            log.warning(
                "AUDIO FEATURE MISMATCH: %s was trained with '%s' audio features but '%s' "
                "features will be computed; predictions will be unreliable%s",
                info.source, info.audio_features, self.extractor.name,
                " (give --vggish-weights)" if info.audio_features == VGGISH else "",
            )  # fmt: skip

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        preset: str | None = None,
        device: str | torch.device = "cpu",
        *,
        vggish_weights: str | Path | None = None,
        threshold: float | None = None,
        split_components: bool | None = None,
        streaming: Streaming = "auto",
        spill: bool = True,
        spill_dir: str | Path | None = None,
        precision: str | None = None,
    ) -> VideoPredictor:
        """Load an avis checkpoint (config inside; `preset`, if given, must fit the weights)
        or an official AVISM one (`preset` required). path=None: the shipped tiny checkpoint.
        `threshold` / `split_components`: None = the checkpoint config's setting;
        `precision`: None = the device's default (`avis.precision.default_precision`).
        Raises CheckpointError when the weights do not fit."""
        from avis.models.checkpoint import read_checkpoint
        from avis.runtime import torch_device

        device = torch_device(device)  # AvisError for a device this machine lacks
        path = Path(path) if path is not None else shipped_checkpoint()
        obj = read_checkpoint(path)
        cfg = _config_for(obj, preset, str(path))
        model = _build_and_load(obj, cfg, str(path))
        info = model_info(obj, str(path), cfg.num_classes)
        extractor = _extractor(vggish_weights, info, device)
        return cls(
            model, cfg, info, extractor=extractor, device=device, threshold=threshold,
            split_components=split_components, streaming=streaming, spill=spill, spill_dir=spill_dir,
            precision=precision,
        )  # fmt: skip

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        source: str | Path | tuple[np.ndarray, np.ndarray],
        *,
        fps: float = 1.0,
        allow_silent: bool = False,
        streaming: Streaming | None = None,
        name: str | None = None,
    ) -> Prediction:
        """A video file, or (frames (T, H, W, 3) uint8 RGB, audio features (T, D)) -> Prediction.

        frames may be any object with `.shape`, `.dtype` and slicing `frames[a:b]` -> uint8
        array (a lazy decoder, a memmap): it is read one chunk at a time."""
        frames, audio, name, features, duration = self._inputs(source, fps, allow_silent, name)
        use_stream = self._use_streaming(frames.shape, streaming)
        head, blocks = self._run(frames, audio, use_stream)
        builder = PredictionBuilder(len(head.scores))
        for _, block in blocks:
            builder.add_block(block.numpy())
        prediction = Prediction(
            source=name, fps=fps, num_frames=frames.shape[0], image_size=tuple(frames.shape[1:3]),
            scores=head.scores.numpy().astype(np.float32), labels=head.labels.numpy(),
            class_names=self.class_names, audio_features=features, rles=builder.rles,
            duration=duration,
        )  # fmt: skip
        return prediction if self.split is None else components.split_components(prediction, self.split)

    def stream(
        self,
        source: str | Path | tuple[np.ndarray, np.ndarray],
        *,
        fps: float = 1.0,
        allow_silent: bool = False,
    ) -> Iterator[FrameResult]:
        """Per-frame results in frame order, memory-bounded (the streaming path).

        The first frame comes after the whole video has been seen once (the video module and
        the mask scores need every frame); then frames follow chunk by chunk. Tracks are the
        model's own: component splitting needs a track's every mask, so it is `predict` only."""
        if self.split is not None:
            log.warning("stream(): tracks are not split into components (predict() splits them)")
        frames, audio, _, _, _ = self._inputs(source, fps, allow_silent, None)
        head, blocks = self._run(frames, audio, True)
        scores, labels = head.scores.numpy().astype(np.float32), head.labels.numpy()
        if not len(scores):
            empty = np.zeros((0, *frames.shape[1:3]), dtype=bool)
            for t in range(frames.shape[0]):
                yield FrameResult(t, t / fps, scores, labels, empty)
            return
        for start, block in blocks:
            for offset in range(block.shape[1]):
                t = start + offset
                yield FrameResult(t, t / fps, scores, labels, block[:, offset].numpy())

    def predict_arrays(self, frames: np.ndarray, audio: np.ndarray):
        """(frames (T, H, W, 3) uint8, audio (T, D)) -> (scores (N,), labels (N,), masks (N, T, H, W))."""
        prediction = self.predict((frames, audio))
        return prediction.scores, prediction.labels, prediction.masks()

    def predict_split(self, root: str | Path, split: str, out_dir: str | Path) -> Path | None:
        """Every video of an AVISeg split -> `<out_dir>/results.json` (sharded under torchrun)."""
        from avis.inference.split_predict import predict_split

        def predict_fn(frames: np.ndarray, audio: np.ndarray) -> Prediction:
            return self.predict((frames, audio))

        return predict_split(
            predict_fn, root, split, out_dir,
            num_classes=self.config.num_classes, audio_dim=self.config.audio_dim,
            audio_features=self.info.audio_features, spatial_audio=self.config.spatial_audio,
        )  # fmt: skip

    def audio_input(self, video) -> np.ndarray:
        """(T, D [+ B*P]) what the model reads per frame of a decoded video (avis.io.video):
        the extractor's features, then for ``spatial_audio`` models the flattened map of
        where the sound is (decode with ``keep_stereo=True``: a mono track is heard at the centre)."""
        from avis.io.video import frame_audio_features, frame_spatial_features

        features = frame_audio_features(video, self.extractor)
        if not self.config.spatial_audio:
            return features
        return np.concatenate([features, frame_spatial_features(video)], axis=1)

    def window_audio_input(self, audio: np.ndarray, stereo: np.ndarray | None, sample_rate: int) -> np.ndarray:
        """(D [+ B*P],) what the model reads for one frame's 1-second window (the online mode;
        `audio_input`'s per-frame row): audio (n,) mono, stereo (n, 2) left/right of the same
        window, needed by ``spatial_audio`` models only."""
        features = self.extractor(audio, sample_rate, 1)[0]
        if not self.config.spatial_audio:
            return features
        from avis.audio.spatial import window_maps

        if stereo is None:
            raise ValueError("this model reads where the sound is: pass the window's stereo samples")
        return np.concatenate([features, window_maps(stereo, sample_rate, np.zeros(1)).reshape(-1)])

    # ------------------------------------------------------------------ internals
    def _inputs(self, source, fps, allow_silent, name):
        if isinstance(source, tuple):
            frames, audio = source
            if not (hasattr(frames, "shape") and hasattr(frames, "dtype")):
                frames = np.asarray(frames)  # else keep it: a lazy source is sliced per chunk
            audio = np.asarray(audio, dtype=np.float32)
            if len(frames.shape) != 4 or frames.shape[-1] != 3 or np.dtype(frames.dtype) != np.uint8:
                raise MediaError(
                    f"{name or 'frames'}: expected (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}"
                )
            features, duration = PRECOMPUTED, None
            if audio.dtype.kind == "f" and not np.isfinite(audio).all():
                raise MediaError(f"{name or 'audio'}: the audio features hold NaN or infinite values")
        else:
            from avis.io.video import read_video

            video = read_video(source, fps=fps, allow_silent=allow_silent, keep_stereo=self.config.spatial_audio)
            frames = video.frames
            audio = self.audio_input(video)
            name, features, duration = name or str(source), self.extractor.name, video.duration
        expected = (frames.shape[0], self.config.input_audio_dim)
        if audio.shape != expected:
            hint = ""
            if self.config.spatial_audio and audio.shape[-1:] == (self.config.audio_dim,):
                hint = (
                    "; this model also reads where the sound is: append each frame's flattened map "
                    "(avis.audio.spatial, see VideoPredictor.audio_input) or give a video file"
                )
            raise MediaError(f"{name or 'audio'}: expected audio features {expected}, got {audio.shape}{hint}")
        return frames, torch.from_numpy(audio), name or "frames", features, duration

    def _sizes(self, frame_shape) -> tuple[tuple[int, int], tuple[int, int]]:
        h, w = resized_size(frame_shape[1], frame_shape[2], self.config.test_short_side, self.config.test_max_size)
        div = max(self.config.size_divisibility, 1)
        return (h, w), (h + (-h % div), w + (-w % div))

    def _feature_bytes(self, frame_shape) -> int:
        """Bytes of every frame's mask features (stride 4 of the padded input; float32, or
        2 bytes a value under an autocast dtype the pixel decoder runs in, i.e. not one of its
        fp32 islands: bf16 yes, fp16 no)."""
        _, (hp, wp) = self._sizes(frame_shape)
        dtype = autocast_dtype(self.precision)
        reduced = dtype is not None and dtype not in self.model.pixel_decoder.fp32_under_autocast
        size = BYTES_PER_REDUCED if reduced else BYTES_PER_FLOAT
        return frame_shape[0] * self.config.mask_dim * (hp // STRIDE) * (wp // STRIDE) * size

    def _use_streaming(self, frame_shape, streaming: Streaming | None) -> bool:
        choice = self.streaming if streaming is None else streaming
        if choice != "auto":
            return bool(choice)
        budget = self.host_feature_budget_mb if self.device.type == "cuda" else self.feature_budget_mb
        return self._feature_bytes(frame_shape) / 2**20 > budget

    def _options(self, frame_shape, streaming: bool = False) -> InferenceOptions:
        """The inference options for a video: on CUDA, mask features over the GPU budget are
        offloaded to pinned host memory (standard path); the memory-bounded path encodes at
        most `streaming_chunk_size` frames per call (same outputs: frames are encoded
        independently)."""
        over = self._feature_bytes(frame_shape) / 2**20 > self.feature_budget_mb
        offload = self.options.offload_features or (self.device.type == "cuda" and over)
        chunk = self.options.run_chunk_size
        if streaming and self.streaming_chunk_size is not None:
            chunk = min(chunk, self.streaming_chunk_size)
        return replace(self.options, offload_features=offload, run_chunk_size=chunk)

    def _feature_spill(self, frame_shape) -> contextlib.AbstractContextManager[FeatureSpill | None]:
        """A temporary feature file for the streaming path, or None (recompute) when spilling is
        off or the disk lacks the room."""
        if not self.spill:
            return contextlib.nullcontext()
        nbytes = self._feature_bytes(frame_shape)
        if not spill_fits(nbytes, self.spill_dir):
            where = self.spill_dir or tempfile.gettempdir()
            log.info("%s lacks %.1f GB free for the mask features: recomputing them instead", where, nbytes / 1e9)
            return contextlib.nullcontext()
        return FeatureSpill(self.spill_dir)

    def encoder(
        self, frames: np.ndarray, audio: torch.Tensor, reader: ChunkPrefetcher | None = None,
        size: int | None = None,  # the run's chunk size (static shapes pad shorter chunks to it)
    ):
        """The image encoder of these frames: (encode(start, stop, with_queries) -> ChunkEncoding
        of frames[start:stop], network input size (h, w), padded size (Hp, Wp)). frames (T, H, W, 3)
        uint8 RGB, audio (T, D) features; `reader` prefetches the chunks (pinned on CUDA). Used
        frame by frame by the online mode."""
        input_size, padded = self._sizes(frames.shape)
        div = self.config.size_divisibility
        non_blocking = self.device.type == "cuda"

        def encode(
            start: int, stop: int, with_queries: bool, carry: SlotCarry | None = None
        ) -> ChunkEncoding:
            if reader is not None:
                chunk = reader.get(start, stop)
            else:
                chunk = torch.from_numpy(np.ascontiguousarray(frames[start:stop]))
            chunk = chunk.to(self.device, non_blocking=non_blocking)
            chunk = chunk.permute(0, 3, 1, 2).float()  # (t, 3, H, W)
            if tuple(chunk.shape[-2:]) != input_size:
                shrink = input_size[0] < chunk.shape[-2]
                chunk = F.interpolate(chunk, size=input_size, mode="bilinear", align_corners=False, antialias=shrink)
                chunk = chunk.clamp_(0, 255)
            chunk = pad_frames(chunk, div)
            chunk_audio = audio[start:stop].to(self.device, non_blocking=non_blocking)
            count = stop - start
            if self.static_chunks and size and count < size:  # a fixed shape: pad with the last frame
                chunk = torch.cat([chunk, chunk[-1:].expand(size - count, *chunk.shape[1:])])
                chunk_audio = torch.cat([chunk_audio, chunk_audio[-1:].expand(size - count, -1)])
                return trim_encoding(
                    self.model.encode_chunk(chunk, chunk_audio, input_size, with_queries, carry), count
                )
            return self.model.encode_chunk(chunk, chunk_audio, input_size, with_queries, carry)

        return encode, input_size, padded

    def _run(self, frames: np.ndarray, audio: torch.Tensor, streaming: bool):
        """-> (head with scores/labels, iterator of (first frame, masks (N, t, H, W) bool))."""
        options = self._options(frames.shape, streaming)
        reader = None
        if self.prefetch:
            spans = chunk_spans(frames.shape[0], options.run_chunk_size)
            reader = ChunkPrefetcher(frames, spans, PREFETCH_DEPTH, pin=self.device.type == "cuda")
        encode, input_size, padded = self.encoder(frames, audio, reader, options.run_chunk_size)
        out_size = tuple(frames.shape[1:3])
        args = (self.model, encode, audio, input_size, padded, out_size, options)
        with contextlib.ExitStack() as stack:
            if reader is not None:
                stack.enter_context(reader)
            stack.enter_context(precision_context(self.precision, self.device))
            if streaming:
                with self._feature_spill(frames.shape) as spill:
                    streamed = stream_video(*args, spill=spill)
                return streamed, streamed.chunks
            full = predict_video(*args)
        return full, iter([(0, full.masks)] if len(full.scores) else [])


def trim_encoding(enc: ChunkEncoding, count: int) -> ChunkEncoding:
    """The first `count` frames of a chunk's encoding (the rest was shape padding; a padded
    chunk is a video's last, so its slot carry, which the padding moved on, is dropped)."""
    frame = enc.frame
    if frame is not None:
        frame = FrameDecoderOutput(
            pred_logits=frame.pred_logits[:, :count],
            pred_masks=frame.pred_masks[:, :count],
            frame_queries=frame.frame_queries[:, :count],
            audio_fusion=frame.audio_fusion[:, :count],
        )
    return ChunkEncoding(
        mask_features=enc.mask_features[:count],
        frame_queries=None if enc.frame_queries is None else enc.frame_queries[:count],
        frame=frame,
        stride4_features=enc.stride4_features[:count],
        carry=None,
    )


def _config_for(obj: dict, preset: str | None, source: str) -> AVISMConfig:
    from avis.models.checkpoint import config_of, is_avis_checkpoint, resolve_config

    if preset is not None:
        return resolve_config(preset, source)
    if not is_avis_checkpoint(obj):
        return resolve_config(None, source)  # raises: official files need a preset
    return config_of(obj, source)  # checked: its model can be built


def _build_and_load(obj: dict, cfg: AVISMConfig, source: str) -> AVISM:
    from avis.models.checkpoint import build_loaded, state_dict_of

    state_dict = state_dict_of(obj, source)
    try:
        model = build_loaded(cfg, state_dict, source)  # shapes checked before allocation
    except CheckpointError as err:
        presets = ", ".join(sorted(PRESETS))
        raise CheckpointError(f"{err}\n(check --preset; known presets: {presets})") from None
    return model.eval()


def _extractor(vggish_weights, info: ModelInfo, device):
    if vggish_weights is not None:
        from avis.audio.features import build_extractor

        log.info("audio features: VGGish from %s", vggish_weights)
        return build_extractor("vggish", weights=vggish_weights, device=str(device))
    if info.audio_features == WEIGHT_FREE:
        log.info("audio features: weight-free log-mel statistics (as the checkpoint was trained)")
    else:
        log.warning(
            "NO VGGISH WEIGHTS GIVEN: computing the weight-free audio features (per-band mean/std "
            "of the log-mel patch)%s",
            "; this model expects VGGish features, give --vggish-weights" if info.audio_features == VGGISH else "",
        )
    return WeightFreeExtractor()
