"""Service settings, from ``TBPTT_*`` environment variables (pydantic-settings) or passed in by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every field is also an environment variable: ``data_dir`` is ``TBPTT_DATA_DIR``, and so on."""

    model_config = SettingsConfigDict(env_prefix="TBPTT_", extra="ignore")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    data_dir: Path = Field(Path("./data"), description="where the SQLite store lives")

    fsync: Literal["always", "interval", "never"] = Field(
        "interval", description="when the log reaches the disk (see README: what each can lose on power failure)"
    )
    fsync_interval: float = Field(1.0, gt=0, description="seconds between syncs when fsync=interval")
    log: bool = Field(
        True,
        description="keep the observation log; off only for benchmarks: a crash then loses everything since "
        "the last checkpoint",
    )
    checkpoint_updates: int = Field(100, ge=1, description="checkpoint a stream after this many updates")
    checkpoint_seconds: float = Field(60.0, gt=0, description="... or this many seconds after its last checkpoint")
    idle_seconds: float = Field(
        600.0, gt=0, description="checkpoint and evict a stream from memory after this long without observations"
    )
    shutdown_timeout: float = Field(30.0, gt=0, description="seconds a graceful shutdown may take")

    results_retained: int = Field(
        10_000, ge=1_000, le=1_000_000, description="recent results kept per stream (duplicates, /predictions)"
    )
    batch_wait_ms: float = Field(
        0.0, ge=0, le=100, description="how long the engine waits for more observations to batch with (ms)"
    )
    torch_threads: int = Field(1, ge=1, le=64, description="threads for tensor work (the server shares the cores)")
    watch_queue: int = Field(64, ge=1, le=10_000, description="batches a watcher may fall behind before it is dropped")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
