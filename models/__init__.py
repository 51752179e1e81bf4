"""The learning core: per-stream recurrent models learning online by exact truncated BPTT (pure PyTorch)."""

from .batch import InvalidObservation, StepResult
from .config import StreamConfig
from .engine import Engine, Hidden, StreamExists, StreamMetrics, StreamNotFound

__all__ = [
    "Engine",
    "Hidden",
    "InvalidObservation",
    "StepResult",
    "StreamConfig",
    "StreamExists",
    "StreamMetrics",
    "StreamNotFound",
]
