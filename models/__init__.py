"""The learning core: per-stream recurrent models learning online by exact truncated BPTT (pure PyTorch)."""

from .batch import Columns, Results, StepResult
from .config import StreamConfig
from .cost import observation_macs, step_macs, update_macs
from .engine import Engine, Hidden, StreamMetrics
from .errors import CoreError, InvalidConfig, InvalidObservation, InvalidState, StreamExists, StreamNotFound

__all__ = [
    "Columns",
    "CoreError",
    "Engine",
    "Hidden",
    "InvalidConfig",
    "InvalidObservation",
    "InvalidState",
    "Results",
    "StepResult",
    "StreamConfig",
    "StreamExists",
    "StreamMetrics",
    "StreamNotFound",
    "observation_macs",
    "step_macs",
    "update_macs",
]
