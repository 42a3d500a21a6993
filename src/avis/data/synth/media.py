"""Writing soundtracks (WAV, stdlib `wave`) and mp4 files with sound (PyAV)."""

from __future__ import annotations

import wave
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from avis.data.synth.sound import to_pcm16

PCM_BYTES = 2
MP4_CRF = "20"
AUDIO_BITRATE = 64000
AUDIO_CODEC = "aac"
VIDEO_CODEC = "libx264"


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM of (N,) mono or (N, C) samples."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1 if waveform.ndim == 1 else waveform.shape[1])
        out.setsampwidth(PCM_BYTES)
        out.setframerate(sample_rate)
        out.writeframes(to_pcm16(waveform))


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: int, waveform: np.ndarray, sample_rate: int) -> None:
    """H.264 video of (S, S, 3) uint8 frames at `fps` + an AAC track of a (N,) mono or (N, 2)
    stereo waveform."""
    import av  # heavy; only when an mp4 is asked for

    with av.open(str(path), mode="w") as container:
        video = container.add_stream(VIDEO_CODEC, rate=fps, options={"crf": MP4_CRF, "threads": "1"})
        video.pix_fmt = "yuv420p"
        layout = "mono" if waveform.ndim == 1 else "stereo"
        audio = container.add_stream(AUDIO_CODEC, rate=sample_rate, layout=layout)
        audio.bit_rate = AUDIO_BITRATE
        first = True
        for image in frames:
            if first:
                video.height, video.width = image.shape[:2]
                first = False
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        container.mux(video.encode())
        samples = np.clip(waveform, -1, 1).astype(np.float32).reshape(len(waveform), -1).T  # (C, N)
        step = audio.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], step):
            chunk = np.ascontiguousarray(samples[:, start : start + step])  # (C, n) planar
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        container.mux(audio.encode())
