"""avis: audio-visual instance segmentation (the AVIS / AVISeg / AVISM system) in plain PyTorch."""

__version__ = "0.1.0"

__all__ = ["VideoPredictor", "__version__"]


def __getattr__(name: str):
    # Lazy: `import avis` stays light (no torch import) until the predictor is asked for.
    if name == "VideoPredictor":
        from avis.inference.predictor import VideoPredictor

        return VideoPredictor
    raise AttributeError(f"module 'avis' has no attribute {name!r}")
