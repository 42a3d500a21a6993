"""VGGish in PyTorch, loading the torchvggish weight file (`vggish-10086976.pth`) strictly.

The AVIS audio feature is VGGish's `fc2` output after ReLU (the older Google definition), with
no PCA and no quantisation: `VGGish(...)(examples) -> (N, 128)`. PCA whitening and 8-bit
quantisation (torchvggish `postprocess=True`, Google's `vggish_postprocess`) are available
through `Postprocessor` / `VGGishExtractor(output="pca"|"quantized")`.

State-dict layout (torchvggish `VGG`): `features.{0,3,6,8,11,13}.{weight,bias}` (3x3 convs) and
`embeddings.{0,2,4}.{weight,bias}` (Linear 12288->4096->4096->128). Before flattening, the
(N, 512, 6, 4) map is put in NHWC order (N, 6, 4, 512), as TF-slim did.

Shape legend: N = examples (seconds), F = frames (96), B = mel bands (64), D = 128,
C = channels, H/W = spatial size of the conv maps.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avis.audio.frontend import EXAMPLE_FRAMES, NUM_MEL_BANDS, log_mel_examples
from avis.errors import CheckpointError

EMBEDDING_DIM = 128
HIDDEN_DIM = 4096
# (out_channels, pool_after) per conv; "M" = 2x2 max pool, as torchvggish's make_layers
CONV_PLAN: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
NUM_POOLS = 4
FLAT_DIM = 512 * (EXAMPLE_FRAMES >> NUM_POOLS) * (NUM_MEL_BANDS >> NUM_POOLS)  # 12 288
QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0
QUANTIZE_LEVELS = 255.0
PCA_VECTORS_KEY = "pca_eigen_vectors"
PCA_MEANS_KEY = "pca_means"
PPROC_PREFIX = "pproc."
OUTPUT_MODES = ("embedding", "pca", "quantized")
# Google's TF-slim VGGish checkpoint variable (without "/weights" or "/biases") -> torch prefix
TF_VARIABLES = {
    "vggish/conv1": "features.0",
    "vggish/conv2": "features.3",
    "vggish/conv3/conv3_1": "features.6",
    "vggish/conv3/conv3_2": "features.8",
    "vggish/conv4/conv4_1": "features.11",
    "vggish/conv4/conv4_2": "features.13",
    "vggish/fc1/fc1_1": "embeddings.0",
    "vggish/fc1/fc1_2": "embeddings.2",
    "vggish/fc2": "embeddings.4",
}
TF_CONV_TO_TORCH = (3, 2, 0, 1)  # HWIO -> OIHW


class VGGish(nn.Module):
    """(N, 1, F, B) log-mel examples -> (N, D) embeddings (fc2 after ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for item in CONV_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(FLAT_DIM, HIDDEN_DIM),
            nn.ReLU(),
            nn.Linear(HIDDEN_DIM, HIDDEN_DIM),
            nn.ReLU(),
            nn.Linear(HIDDEN_DIM, EMBEDDING_DIM),
            nn.ReLU(),
        )

    @staticmethod
    def flatten_nhwc(maps: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H*W*C) with index (h*W + w)*C + c, TF-slim's flatten order."""
        return maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1)

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        maps = self.features(examples)  # (N, 512, 6, 4)
        return self.embeddings(self.flatten_nhwc(maps))  # (N, D)


class Postprocessor(nn.Module):
    """PCA (E @ (x - mean)) and optional clip to [-2, 2] + quantisation to 0..255 (as floats)."""

    pca_eigen_vectors: torch.Tensor  # (D, D) buffer
    pca_means: torch.Tensor  # (D, 1) buffer

    def __init__(self, eigen_vectors: torch.Tensor, means: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer(
            "pca_eigen_vectors", eigen_vectors.float().reshape(EMBEDDING_DIM, EMBEDDING_DIM)
        )
        self.register_buffer("pca_means", means.float().reshape(EMBEDDING_DIM, 1))

    def pca(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) PCA-projected."""
        return (self.pca_eigen_vectors @ (embeddings.T - self.pca_means)).T

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) quantised values in 0..255 (float32, no squeeze)."""
        clipped = self.pca(embeddings).clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round(
            (clipped - QUANTIZE_MIN) * (QUANTIZE_LEVELS / (QUANTIZE_MAX - QUANTIZE_MIN))
        )


def _numpy_safe_globals() -> list:
    """The numpy objects a pickled ndarray needs (both numpy 1 and 2 module paths)."""
    core = np._core if hasattr(np, "_core") else np.core
    reconstruct = core.multiarray._reconstruct
    return [
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ] + [type(np.dtype(t)) for t in (np.float32, np.float64)]


def _load_torch_file(path: Path, allow_numpy: bool = False) -> object:
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_numpy:
            raise CheckpointError(f"{path}: not a plain tensor state dict ({err})") from err
    except Exception as err:  # corrupt / not a torch file
        raise CheckpointError(f"{path}: cannot be read by torch.load ({err})") from err
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot be read as a tensor/array dict ({err})") from err


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in VGGish().state_dict().items()}


def check_vggish_state_dict(state: object, source: str) -> dict[str, torch.Tensor]:
    """Check a torchvggish-layout state dict strictly; return it (float32) without `pproc.*`.

    `pproc.*` entries (torchvggish saved with postprocess=True) are allowed and dropped; every
    other missing, unexpected or mis-shaped key raises CheckpointError naming `source`.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a state dict, found {type(state).__name__}")
    state = {k: v for k, v in state.items() if not str(k).startswith(PPROC_PREFIX)}
    expected = _expected_shapes()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: not a torchvggish VGGish state dict: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{source}: entry {key!r}: expected shape {shape}, found {found}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            count = int(value.numel() - torch.isfinite(value).sum())
            raise CheckpointError(f"{source}: entry {key!r} holds {count} NaN or infinite values")
    return {k: v.float() for k, v in state.items()}


def load_vggish_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvggish `.pth` (weights_only) and check it with `check_vggish_state_dict`."""
    path = Path(path)
    return check_vggish_state_dict(_load_torch_file(path), str(path))


def vggish_from_state_dict(state: dict[str, torch.Tensor], source: str = "state dict") -> VGGish:
    """A `VGGish` in eval mode holding (not copying) the checked tensors of `state`."""
    return _vggish_from_checked(check_vggish_state_dict(state, source))


def _vggish_from_checked(checked: dict[str, torch.Tensor]) -> VGGish:
    """A `VGGish` in eval mode holding the tensors of a state dict already checked."""
    with torch.device("meta"):
        model = VGGish()
    model.load_state_dict(checked, strict=True, assign=True)
    return model.eval()


def load_vggish(path: str | Path) -> VGGish:
    """A `VGGish` in eval mode with the weights of a torchvggish `.pth` file."""
    return _vggish_from_checked(load_vggish_state_dict(path))


def tf_to_torch_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Convert the variables of Google's `vggish_model.ckpt` (read with TF by the user:
    name -> array) to the torchvggish layout: conv kernels HWIO -> OIHW (a permutation, not
    a bare transpose, which would swap kernel H and W), FC weights transposed, biases as is."""
    state = {}
    for tf_name, prefix in TF_VARIABLES.items():
        for suffix, key in (("weights", "weight"), ("biases", "bias")):
            name = f"{tf_name}/{suffix}"
            if name not in variables:
                raise CheckpointError(f"TF variables: missing {name!r}")
            value = torch.as_tensor(np.asarray(variables[name]), dtype=torch.float32)
            if key == "weight":
                value = value.permute(*TF_CONV_TO_TORCH) if value.ndim == 4 else value.T
            state[f"{prefix}.{key}"] = value.contiguous()
    return check_vggish_state_dict(state, "TF variables")


def load_pca_params(path: str | Path) -> Postprocessor:
    """PCA parameters from torchvggish's `vggish_pca_params-*.pth` or Google's `.npz`."""
    path = Path(path)
    entries: object
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                entries = {k: data[k] for k in data.files}
        except Exception as err:
            raise CheckpointError(f"{path}: cannot be read as .npz ({err})") from err
    else:
        entries = _load_torch_file(path, allow_numpy=True)
    if not isinstance(entries, dict):
        raise CheckpointError(
            f"{path}: expected a dict of PCA parameters, found {type(entries).__name__}"
        )
    shapes = {PCA_VECTORS_KEY: EMBEDDING_DIM * EMBEDDING_DIM, PCA_MEANS_KEY: EMBEDDING_DIM}
    tensors = {}
    for key, size in shapes.items():
        if key not in entries:
            raise CheckpointError(f"{path}: missing entry {key!r} (found {sorted(entries)})")
        value = torch.as_tensor(np.asarray(entries[key]), dtype=torch.float32)
        if value.numel() != size:
            raise CheckpointError(
                f"{path}: entry {key!r}: expected {size} values, found shape {tuple(value.shape)}"
            )
        tensors[key] = value
    return Postprocessor(tensors[PCA_VECTORS_KEY], tensors[PCA_MEANS_KEY])


class VGGishExtractor:
    """`AudioFeatureExtractor` running the log-mel front end and VGGish: (S, 128) float32.

    output: "embedding" (AVIS, default), "pca" (PCA-projected floats) or "quantized"
    (PCA + clip + 0..255, as torchvggish postprocess=True). Zero-filled seconds are run through
    the network like the official extractor does (their embedding is not zero).
    """

    name = "vggish"

    def __init__(
        self,
        model: VGGish,
        postprocessor: Postprocessor | None = None,
        output: str = "embedding",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        if output != "embedding" and postprocessor is None:
            raise ValueError(f"output {output!r} needs PCA parameters (postprocessor)")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.postprocessor = postprocessor.to(self.device) if postprocessor is not None else None
        self.output = output
        self.batch_size = batch_size
        if output != "embedding":
            self.name = f"vggish_{output}"

    @classmethod
    def from_files(
        cls,
        weights: str | Path,
        pca_params: str | Path | None = None,
        output: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> VGGishExtractor:
        """Load weights (and PCA params: then output defaults to "quantized")."""
        post = load_pca_params(pca_params) if pca_params is not None else None
        mode = output or ("quantized" if post is not None else "embedding")
        return cls(load_vggish(weights), post, mode, device=device, batch_size=batch_size)

    def _require_postprocessor(self) -> Postprocessor:
        if self.postprocessor is None:
            raise ValueError(
                f"output {self.output!r} needs PCA parameters (postprocessor), found None"
            )
        return self.postprocessor

    @torch.no_grad()
    def embed_examples(self, examples: np.ndarray) -> np.ndarray:
        """(N, F, B) log-mel examples -> (N, D) float32 features."""
        out = []
        for start in range(0, examples.shape[0], self.batch_size):
            batch = torch.from_numpy(
                np.ascontiguousarray(examples[start : start + self.batch_size])
            )
            emb = self.model(batch.float()[:, None].to(self.device))  # (n, D)
            if self.output == "pca":
                emb = self._require_postprocessor().pca(emb)
            elif self.output == "quantized":
                emb = self._require_postprocessor()(emb)
            out.append(emb.float().cpu().numpy())
        if not out:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def __call__(self, waveform: np.ndarray, sample_rate: int, num_seconds: int) -> np.ndarray:
        return self.embed_examples(log_mel_examples(waveform, sample_rate, num_seconds))
