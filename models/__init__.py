"""The learning core: per-stream recurrent models learning online by exact truncated BPTT (pure PyTorch)."""

import os

# torch's SIMD kernels compute the last elements of a tensor (those past its last whole vectors) with scalar
# code that rounds otherwise (exp, tanh, fused multiply-adds): a stream's bits would depend on how many
# streams share its call, and a recovery that replays the log in other groupings than the live calls had
# would drift from the uninterrupted run. The portable kernels compute every element alike. Read by torch
# at its first operation; a value set beforehand is kept (tests/models/test_grouping.py, README: "Exactness").
os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
# MKL, which computes torch's matrix products, picks its kernels by the CPU (AVX2, AVX-512, AMX), each summing
# in its own order: the bits a stream got on one machine were not those it got on another, and the kernels
# MKL gave a batch of one on one CPU kind (AVX-512 with AMX, 2026-12-05) differed from a batch's where they
# had agreed on the CI machines before (models/batched.py). Its AVX2 branch, in its conditional numerical
# reproducibility mode, gives the same bits on every Intel CPU with AVX2 (MKL's developer guide), so what the
# tests check here is what runs elsewhere. Read at MKL's first call; a value set beforehand is kept.
os.environ.setdefault("MKL_CBWR", "AVX2")

from .batch import Columns, Results, StepResult  # (after the kernel choice above)
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
