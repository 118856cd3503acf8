"""Memory-based workflow selection (the ``nlsq.core.workflow`` API, re-implemented).

>>> from nlsq_tasks.workflow import MemoryBudgetSelector, calculate_adaptive_tolerances, OptimizationGoal
>>> calculate_adaptive_tolerances(5_000_000, goal=OptimizationGoal.QUALITY)["gtol"]
1e-08

Modules: ``goals`` (OptimizationGoal), ``tolerances`` (size tiers), ``budget``
(MemoryBudget), ``configs`` (Strategy and chunk configs), ``selector`` (the pure
``decide_strategy`` and MemoryBudgetSelector), ``checkpoints`` (timestamped directories),
``cluster`` (PBS/SLURM/GPU detection) and ``presets`` (named YAML presets).
"""

from .budget import GB, MemoryBudget
from .checkpoints import create_checkpoint_directory
from .cluster import (
    ClusterDetector,
    ClusterInfo,
    MultiGPUConfig,
    create_distributed_config,
    expand_slurm_nodelist,
    get_multi_gpu_config,
)
from .configs import ChunkedConfig, Strategy, StreamingConfig
from .goals import OptimizationGoal
from .presets import Preset, PresetError, list_presets, load_preset
from .selector import MemoryBudgetSelector, StrategyDecision, decide_strategy
from .tolerances import TOLERANCE_TIERS, calculate_adaptive_tolerances

__all__ = [
    "GB",
    "TOLERANCE_TIERS",
    "ChunkedConfig",
    "ClusterDetector",
    "ClusterInfo",
    "MemoryBudget",
    "MemoryBudgetSelector",
    "MultiGPUConfig",
    "OptimizationGoal",
    "Preset",
    "PresetError",
    "Strategy",
    "StrategyDecision",
    "StreamingConfig",
    "calculate_adaptive_tolerances",
    "create_checkpoint_directory",
    "create_distributed_config",
    "decide_strategy",
    "expand_slurm_nodelist",
    "get_multi_gpu_config",
    "list_presets",
    "load_preset",
]
