"""Training engine: config, optimiser, data order, DDP, checkpoints, logging, evaluation.

    from avis.engine import Trainer, load_config
    cfg = load_config("avism_tiny", "my.yaml", ["optim.lr=2e-4"])

`avis train` (avis.cli.train) builds the components with `avis.engine.build` and runs a
`Trainer`; see docs/training.md.
"""

from avis.engine.config import TRAIN_PRESETS, TrainConfig, load_config
from avis.engine.distributed import DistInfo, init_distributed
from avis.engine.evaluation import SplitEvaluator
from avis.engine.trainer import Trainer

__all__ = [
    "TRAIN_PRESETS",
    "DistInfo",
    "SplitEvaluator",
    "TrainConfig",
    "Trainer",
    "init_distributed",
    "load_config",
]
