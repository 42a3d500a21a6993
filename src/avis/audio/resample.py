"""Band-limited sinc resampling, numerically equivalent to resampy's `kaiser_best` filter.

The official AVIS front end resamples every 1-second chunk with `resampy.resample(chunk, sr,
16000)` (filter `kaiser_best`). resampy needs numba; this module reimplements the same
algorithm (J. O. Smith's band-limited interpolation with a linearly interpolated filter table)
in numpy/scipy and computes the filter table itself:

* the right half of a Kaiser-windowed sinc, `NUM_ZEROS` zero crossings, `2**PRECISION_BITS`
  table points per crossing, cut-off at `ROLLOFF` x the Nyquist rate of the lower rate;
* for downsampling the table is scaled by the rate ratio and read with a stride of
  `int(ratio * table_points)`, which stretches the filter over more input samples;
* output sample t sits at input time t * sr_in / sr_out; the filter only sees the given
  input (zeros beyond both ends), and the output length is floor(n_in * sr_out / sr_in).

Since the weights only depend on (sr_in, sr_out, n_in), they are built once as a sparse
(n_out, n_in) matrix and cached, so resampling many equally long chunks is a sparse matmul.

Shape legend: N = input samples, M = output samples, C = columns (independent signals),
K = filter taps per output sample.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse

# resampy 0.4.3 `kaiser_best` parameters (see /work/shared/audio_reference/README.md)
NUM_ZEROS = 50
PRECISION_BITS = 13
ROLLOFF = 0.9173473712608761
# Kaiser beta fitted (least max-abs error) to resampy 0.4.3's stored kaiser_best.npz table,
# which is not shipped here: the computed table differs from it by at most 3e-11.
KAISER_BETA = 12.984585301434363
# The sparse weight matrices are ~4.4M entries per (44.1 kHz -> 16 kHz) second; keep a few.
_MATRIX_CACHE_SIZE = 8


@lru_cache(maxsize=1)
def kaiser_best_table() -> np.ndarray:
    """The right half of the interpolation filter: (NUM_ZEROS * 2**PRECISION_BITS + 1,) float64."""
    points = NUM_ZEROS * 2**PRECISION_BITS
    sinc_half = ROLLOFF * np.sinc(ROLLOFF * np.linspace(0.0, NUM_ZEROS, points + 1))
    taper = np.kaiser(2 * points + 1, KAISER_BETA)[points:]
    table = taper * sinc_half
    table.setflags(write=False)
    return table


def resampled_length(num_in: int, sr_in: int, sr_out: int) -> int:
    """floor(num_in * sr_out / sr_in), the output length resampy produces."""
    return (num_in * sr_out) // sr_in


def _wing(
    frac: np.ndarray, limit: np.ndarray, table: np.ndarray, delta: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weights of one filter wing: frac (M,) in table units, limit (M,) taps allowed.

    Returns weights (M, K) and a validity mask (M, K).
    """
    table_points = 2**PRECISION_BITS
    index_frac = frac * table_points
    offset = index_frac.astype(np.int64)  # (M,)
    eta = index_frac - offset  # (M,)
    taps_in_table = (table.shape[0] - offset) // step  # (M,)
    taps = np.minimum(limit, taps_in_table)  # (M,)
    k = np.arange(int(taps.max(initial=0)))  # (K,)
    valid = k[None, :] < taps[:, None]  # (M, K)
    index = np.where(valid, offset[:, None] + k[None, :] * step, 0)  # (M, K)
    weights = table[index] + eta[:, None] * delta[index]
    return np.where(valid, weights, 0.0), valid


@lru_cache(maxsize=_MATRIX_CACHE_SIZE)
def resample_matrix(num_in: int, sr_in: int, sr_out: int) -> scipy.sparse.csr_matrix:
    """The (M, N) sparse matrix A with resample(x) = A @ x for an input of num_in samples."""
    num_out = resampled_length(num_in, sr_in, sr_out)
    if num_out < 1:
        raise ValueError(
            f"cannot resample {num_in} samples from {sr_in} Hz to {sr_out} Hz: no output sample"
        )
    ratio = sr_out / sr_in
    scale = min(1.0, ratio)
    table = kaiser_best_table() * (ratio if ratio < 1 else 1.0)
    delta = np.diff(table, append=table[-1])
    step = int(scale * 2**PRECISION_BITS)

    time = np.arange(num_out) * (1.0 / ratio)  # (M,) position in input samples
    base = time.astype(np.int64)  # (M,)
    frac_left = scale * (time - base)  # (M,)
    left_w, left_valid = _wing(frac_left, base + 1, table, delta, step)  # x[base - k]
    right_w, right_valid = _wing(scale - frac_left, num_in - base - 1, table, delta, step)
    rows = np.arange(num_out)[:, None]
    left_cols = base[:, None] - np.arange(left_w.shape[1])[None, :]
    right_cols = base[:, None] + 1 + np.arange(right_w.shape[1])[None, :]
    data = np.concatenate([left_w[left_valid], right_w[right_valid]])
    row_idx = np.concatenate(
        [
            np.broadcast_to(rows, left_w.shape)[left_valid],
            np.broadcast_to(rows, right_w.shape)[right_valid],
        ]
    )
    col_idx = np.concatenate([left_cols[left_valid], right_cols[right_valid]])
    matrix = scipy.sparse.csr_matrix((data, (row_idx, col_idx)), shape=(num_out, num_in))
    return matrix


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample x (N,) or (N, C) along axis 0 from sr_in to sr_out; float64 out (M,) / (M, C).

    Equal rates return a float64 copy. Raises ValueError when no output sample results.
    """
    x = np.asarray(x, dtype=np.float64)
    if sr_in == sr_out:
        return x.copy()
    return np.asarray(resample_matrix(x.shape[0], int(sr_in), int(sr_out)) @ x)
