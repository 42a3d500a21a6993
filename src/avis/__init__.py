"""avis: audio-visual instance segmentation (the AVIS / AVISeg / AVISM system) in plain PyTorch."""

__version__ = "0.1.0"
