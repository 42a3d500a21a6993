"""Training losses of AVISM: Hungarian matchers, set criterion and similarity loss.

Loss and matching live outside the model's forward: `AVISMCriterion(outputs, targets)`.
"""

from avis.losses.criterion import AVISMCriterion, LossResult, LossWeights
from avis.losses.matcher import HungarianMatcher, MatchTarget
from avis.losses.targets import VideoTargets, prepare_video_targets

__all__ = [
    "AVISMCriterion",
    "HungarianMatcher",
    "LossResult",
    "LossWeights",
    "MatchTarget",
    "VideoTargets",
    "prepare_video_targets",
]
