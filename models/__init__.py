"""The learning core: per-stream recurrent models learning online by exact truncated BPTT (pure PyTorch)."""

from .batch import StepResult
from .config import StreamConfig
from .engine import Engine, Hidden, StreamMetrics
from .errors import CoreError, InvalidConfig, InvalidObservation, InvalidState, StreamExists, StreamNotFound

__all__ = [
    "CoreError",
    "Engine",
    "Hidden",
    "InvalidConfig",
    "InvalidObservation",
    "InvalidState",
    "StepResult",
    "StreamConfig",
    "StreamExists",
    "StreamMetrics",
    "StreamNotFound",
]
