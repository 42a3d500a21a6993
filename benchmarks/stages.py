"""Per-stage cost of AVISM inference: matrix FLOPs, measured time, fraction of the floor.

Stages (R50 preset, random weights, frames H x W padded to Hp x Wp, one chunk of t frames):
backbone, pixel decoder, frame decoder, video module (whole clip), mask features (the video
module's 1x1 conv), mask post-processing (mask scores of the distinct top-k candidate
queries + full-resolution masks of ``KEPT_FOR_TIMING`` instances), audio features
(weight-free and VGGish with random weights) and video decode (PyAV, 1 fps, + resize).

Letters: t frames, Hp x Wp padded input, q distinct candidate queries, N kept instances.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchmarks.common import GemmProbe, time_call
from benchmarks.flops import count_flops

FEATURE_NAMES = ("res2", "res3", "res4", "res5")
AUDIO_RATE = 48_000  # Hz, stereo: the common container format
AUDIO_CHANNELS = 2
KEPT_FOR_TIMING = 10  # instances whose full-resolution masks the post-processing stage makes
PIXEL_MAX = 255.0
DEFAULT_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media" / "bigbuckbunny.mp4"


@dataclass
class StageResult:
    name: str
    flops_per_frame: int  # matrix FLOPs (0 = not matrix work)
    seconds_per_frame: float  # median over repeats
    samples_s: list[float]  # per-call seconds of each repeat
    frames: int  # frames per call
    cpu_seconds_per_frame: float = 0.0  # median CPU time (all threads) per frame

    def floor_s(self, gemm_flops: float) -> float:
        return self.flops_per_frame / gemm_flops

    def as_dict(self, gemm_flops: float, gemm_flops_per_cpu_s: float | None = None) -> dict:
        floor = self.floor_s(gemm_flops)
        out = {
            "gflops_per_frame": self.flops_per_frame / 1e9,
            "seconds_per_frame": self.seconds_per_frame,
            "floor_seconds_per_frame": floor,
            "fraction_of_floor": floor / self.seconds_per_frame if self.seconds_per_frame else None,
            "frames_per_call": self.frames,
            "samples_s": self.samples_s,
            "cpu_seconds_per_frame": self.cpu_seconds_per_frame,
        }
        if gemm_flops_per_cpu_s and self.cpu_seconds_per_frame:
            cpu_floor = self.flops_per_frame / gemm_flops_per_cpu_s
            out["fraction_of_floor_cpu_time"] = cpu_floor / self.cpu_seconds_per_frame
        return out


def build_model(preset: str = "avism_r50", seed: int = 0):
    """The preset with seeded random weights, in eval mode."""
    from avis.models.avism import build_avism
    from avis.models.config import get_preset

    torch.manual_seed(seed)
    cfg = get_preset(preset)
    return build_avism(cfg).eval(), cfg


def random_frames(t: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(t, 3, height, width) float RGB 0..255, smooth enough to look like an image."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(t, 3, height // 8 + 1, width // 8 + 1, generator=gen)
    return F.interpolate(coarse, size=(height, width), mode="bilinear") * PIXEL_MAX


def _measure(
    name: str, fn: Callable[[], object], frames: int, repeats: int, probe: GemmProbe
) -> StageResult:
    flops, _ = count_flops(fn)  # doubles as the warm-up run
    probe.sample()
    timing = time_call(fn, repeats=repeats, warmup=0)
    return StageResult(
        name, flops // frames, timing.median / frames, timing.samples, frames,
        timing.cpu_median / frames,
    )  # fmt: skip


def _measure_compiled(
    name: str, fn: Callable[[], object], frames: int, repeats: int, probe: GemmProbe, flops: int
) -> tuple[StageResult, float]:
    """Like ``_measure`` for a compiled stage: the first call compiles (its seconds returned)."""
    start = time.perf_counter()
    fn()
    compile_s = time.perf_counter() - start
    probe.sample()
    timing = time_call(fn, repeats=repeats, warmup=0)
    result = StageResult(
        name, flops, timing.median / frames, timing.samples, frames, timing.cpu_median / frames
    )
    return result, compile_s


def model_stages(
    model,
    cfg,
    frames: torch.Tensor,
    audio: torch.Tensor,
    repeats: int,
    probe: GemmProbe,
    compile_parts: Sequence[str] = (),
) -> tuple[list[StageResult], dict]:
    """frames (t, 3, h, w) 0..255 at the network input size, audio (t, D).

    Returns the stage results and the candidate counts used by the post-processing stage.
    With ``compile_parts`` the model is then compiled (``avis.inference.accelerate``) and
    those stages are timed again as ``<stage>+compiled`` (compile time in the info dict).
    """
    from avis.inference.postprocess import (
        cropped_mask_logits,
        mask_confidence,
        rechunk,
        resize_masks,
        select_candidates,
    )
    from avis.inference.video import InferenceOptions, pad_frames

    t, (h, w) = frames.shape[0], frames.shape[-2:]
    padded = pad_frames(frames, model.size_divisibility)
    padded_hw = tuple(padded.shape[-2:])
    opts = InferenceOptions.from_config(cfg)
    results = []
    with torch.inference_mode():
        batch = padded.unsqueeze(0)
        results.append(
            _measure(
                "backbone", lambda: model.backbone_features(batch, [(h, w)]), t, repeats, probe
            )
        )
        feats = model.backbone_features(batch, [(h, w)])
        maps = [feats[n] for n in FEATURE_NAMES]
        results.append(
            _measure("pixel_decoder", lambda: model.pixel_decoder(maps), t, repeats, probe)
        )
        pix = model.pixel_decoder(maps)

        def frame_decoder():  # as inference calls it (AVISM.encode_chunk_features)
            return model.frame_decoder(
                pix.multi_scale_features, pix.mask_features, audio, 1, all_layer_masks=False
            )

        # the official computation (full-size masks at every layer), for the reference floor
        reference_flops, _ = count_flops(
            lambda: model.frame_decoder(pix.multi_scale_features, pix.mask_features, audio, 1)
        )

        results.append(_measure("frame_decoder", frame_decoder, t, repeats, probe))
        queries = frame_decoder().frame_queries[-1]
        results.append(
            _measure("video_module", lambda: model.decode_video(queries, audio), t, repeats, probe)
        )
        video = model.decode_video(queries, audio)

        def mask_feats():
            return model.video_module.mask_features(pix.stride4_features)

        results.append(_measure("mask_features", mask_feats, t, repeats, probe))
        features = mask_feats()
        cands = select_candidates(video.pred_logits[-1, 0, 0], opts.top_k)
        embed = video.pred_mask_embed[-1, 0, 0][torch.unique(cands.query_index)]  # (q, Cm)
        kept = embed[:KEPT_FOR_TIMING]

        def postprocess():
            blocks = list(rechunk([features], opts.interpolate_chunk_size))
            mask_confidence(embed, blocks, padded_hw, (h, w), opts.mask_prob_threshold)
            for block in blocks:
                resize_masks(cropped_mask_logits(kept, block, padded_hw, (h, w)), (h, w))

        results.append(_measure("mask_postprocess", postprocess, t, repeats, probe))
        compile_s = {}
        if compile_parts:
            from avis.inference.accelerate import compile_for_inference

            compile_for_inference(model, compile_parts)
            calls = {
                "backbone": lambda: model.backbone_features(batch, [(h, w)]),
                "pixel_decoder": lambda: model.pixel_decoder(maps),
                "frame_decoder": frame_decoder,
            }
            flops = {r.name: r.flops_per_frame for r in results}
            for part in compile_parts:
                result, compile_s[part] = _measure_compiled(
                    f"{part}+compiled", calls[part], t, repeats, probe, flops[part]
                )
                results.append(result)
    info = {
        "compile_seconds": compile_s,
        "distinct_candidate_queries": int(embed.shape[0]),
        "kept": int(kept.shape[0]),
        "frame_decoder_all_layer_masks_gflops_per_frame": reference_flops / t / 1e9,
    }
    return results, info


def audio_stages(seconds: int, repeats: int, probe: GemmProbe, seed: int = 0) -> list[StageResult]:
    """Audio features of ``seconds`` seconds of 48 kHz stereo noise (one feature per second)."""
    from avis.audio.features import WeightFreeExtractor
    from avis.audio.vggish import VGGish, VGGishExtractor

    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal((seconds * AUDIO_RATE, AUDIO_CHANNELS)) * 0.1).astype(np.float32)
    torch.manual_seed(seed)
    vggish = VGGishExtractor(VGGish())
    weight_free = WeightFreeExtractor()
    return [
        _measure("audio_weight_free", lambda: weight_free(wave, AUDIO_RATE, seconds), seconds, repeats, probe),
        _measure("audio_vggish", lambda: vggish(wave, AUDIO_RATE, seconds), seconds, repeats, probe),
    ]  # fmt: skip


def decode_stage(
    path: Path, size: tuple[int, int], repeats: int, probe: GemmProbe
) -> StageResult | None:
    """PyAV decode at 1 fps + bilinear resize to the network input ``size`` (per sampled frame)."""
    from avis.io.video import read_video

    if not path.is_file():
        return None

    def decode():
        video = read_video(path, fps=1.0)
        frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float()
        F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
        return video.num_frames

    count = decode()
    return _measure("video_decode", decode, count, repeats, probe)
