"""Peak-relative mask prior: an avis option (`AVISMConfig.peak_prior`), off in the official model.

A video query's mask in frame t is ``embed . F_t(x)``: a linear read-out of shared pixel
features. Two look-alike instances of one class have nearly the same features, so a query that
likes one likes the other about as much, and the union of the two is a stable answer (issue 19:
twins). The prior adds, per query and frame, a radial term around the query's own peak:

    logit(x) = embed . F_t(x) + sum_s w_s(embed) * exp(-|x - p|^2 / (2 sigma_s^2))
                              + w_d(embed) * |x - p|

where ``p`` is the grid cell of the highest base logit (``embed . F_t``, not differentiated)
and ``w(embed)`` (one weight per radius and one for the distance) a linear map of the query's mask embedding (zero-initialised, so a fresh model
computes what the official one does). With a negative distance weight a query can keep the
instance under its peak and drop a look-alike elsewhere (the bumps shape the near field, the
distance term reaches any far one): a slight preference for one twin
becomes a whole mask of it (the relative coordinates of CondInst, Tian et al. 2020, as a
radial profile). Distances are in units of the grid's longer side, so the same weights serve
every input scale.

Every path that turns mask embeddings into logits applies it: training
(``video_masks``), offline and streaming inference (``avis.inference.postprocess``) and the
online mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# radii of the radial profile, as fractions of the mask grid's longer side
PEAK_PRIOR_SIGMAS = (0.05, 0.1, 0.2, 0.4)


class PeakPrior(nn.Module):
    """``weight``: Linear(mask_dim -> len(sigmas) + 1), zero-initialised."""

    def __init__(self, mask_dim: int, sigmas: tuple[float, ...] = PEAK_PRIOR_SIGMAS) -> None:
        super().__init__()
        if not sigmas or min(sigmas) <= 0:
            raise ValueError(f"sigmas must be positive, got {sigmas}")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.weight = nn.Linear(mask_dim, len(self.sigmas) + 1)  # bumps, then the distance
        nn.init.zeros_(self.weight.weight)
        nn.init.zeros_(self.weight.bias)

    def forward(
        self, embed: Tensor, logits: Tensor, valid: tuple[int, int] | None = None
    ) -> Tensor:
        """embed (..., Cm) and base logits (..., Hm, Wm), the same leading dims (or
        broadcastable) -> logits with the prior added, (..., Hm, Wm).

        ``valid``: the grid rows and columns of the unpadded input; the peak is looked for
        there only (None: the whole grid).
        """
        hm, wm = logits.shape[-2:]
        search = logits.detach()
        if valid is not None:
            search = search[..., : max(1, valid[0]), : max(1, valid[1])]
        cols = search.shape[-1]
        peak = search.flatten(-2).argmax(-1)  # (...,)
        py = torch.div(peak, cols, rounding_mode="floor").to(logits.dtype)
        px = (peak % cols).to(logits.dtype)
        scale = float(max(hm, wm))
        ys = torch.arange(hm, device=logits.device, dtype=logits.dtype)
        xs = torch.arange(wm, device=logits.device, dtype=logits.dtype)
        dy2 = ((ys - py[..., None]) / scale) ** 2  # (..., Hm)
        dx2 = ((xs - px[..., None]) / scale) ** 2  # (..., Wm)
        d2 = dy2[..., :, None] + dx2[..., None, :]  # (..., Hm, Wm)
        w = self.weight(embed.to(self.weight.weight.dtype)).to(logits.dtype)  # (..., S + 1)
        prior = w[..., -1, None, None] * d2.sqrt()
        for s, sigma in enumerate(self.sigmas):
            prior = prior + w[..., s, None, None] * torch.exp(d2 / (-2.0 * sigma * sigma))
        return logits + prior
