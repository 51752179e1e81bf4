"""Service settings, from ``TBPTT_*`` environment variables (pydantic-settings) or passed in by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tbptt.models.config import CEILINGS

from .schemas import MAX_BATCH


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
    shutdown_timeout: float = Field(
        30.0, gt=0, description="seconds a graceful shutdown may take in all (requests in flight get half at most)"
    )

    results_retained: int = Field(
        5_000,
        ge=1_000,
        le=1_000_000,
        description="recent results kept per stream with their observations (retries, /predictions)",
    )
    alerts_retained: int = Field(
        10_000, ge=100, le=1_000_000, description="alerts kept per tenant in its feed (GET /v1/anomalies)"
    )
    batch_wait_ms: float = Field(
        0.5,
        ge=0,
        le=100,
        description="how long the engine waits for more observations to batch with (ms), while clients send "
        "concurrently",
    )
    engine_slice_ms: float = Field(
        50.0, gt=0, le=10_000, description="the engine's work on one batch before it serves other tenants (ms)"
    )
    torch_threads: int = Field(1, ge=1, le=64, description="threads for tensor work (the server shares the cores)")
    shards: int = Field(
        0, ge=0, le=128,
        description="shard processes (Ray actors, pip extra [ray]) that own the streams; 0: everything in this "
        "process, no Ray",
    )  # fmt: skip
    workers: int = Field(
        1, ge=1, le=64,
        description="with shards: front processes that share the port, each routing requests to the shards",
    )  # fmt: skip
    ray_address: str | None = Field(
        None, description="with shards: the Ray cluster to join (ray start's address); unset: a local Ray this "
        "server starts and stops, whatever other Ray runs on the machine (Ray's own RAY_ADDRESS is not read)"
    )  # fmt: skip
    link_port: int | None = Field(
        None, ge=1, le=65535 - 127,
        description="with shards: shard K listens for the fronts on this port + K (for firewalls between a "
        "cluster's machines); unset: a port the system picks",
    )  # fmt: skip

    # -- access ------------------------------------------------------------------------------------------
    api_keys: str = Field("", description="comma-separated tenant:key pairs; empty: no keys (loopback only)")
    api_keys_file: Path | None = Field(None, description="a file of tenant:key lines, added to api_keys")
    trust_network: bool = Field(False, description="allow listening beyond loopback without API keys")
    allowed_origins: str = Field(
        "",
        description="comma-separated Origins whose pages may use the API (CORS for HTTP, preflights included; WebSockets); "
        '"*": any',
    )
    allowed_hosts: str = Field(
        "", description="comma-separated Host names accepted without API keys, besides loopback and TBPTT_HOST"
    )

    # -- limits ------------------------------------------------------------------------------------------
    max_body_bytes: int = Field(1 << 20, ge=1024, description="request body limit (413 beyond)")
    max_model_bytes: int = Field(64 << 20, ge=1024, description="model file upload limit (413 beyond)")
    max_ws_message_bytes: int = Field(1 << 20, ge=1024, description="WebSocket message limit (close 1009 beyond)")
    max_batch: int = Field(MAX_BATCH, ge=1, le=MAX_BATCH, description="observations per request")
    max_streams_per_tenant: int = Field(100_000, ge=1, description="streams a tenant may create")
    max_streams: int = Field(1_000_000, ge=1, description="streams in all")
    max_state_bytes_per_tenant: int = Field(
        8 << 30, ge=1 << 20, description="memory a tenant's streams may hold: model state and kept results (403)"
    )
    max_input_size: int = Field(1024, ge=1, le=CEILINGS["input_size"], description="model.input_size at most")
    max_output_size: int = Field(1024, ge=1, le=CEILINGS["output_size"], description="model.output_size at most")
    max_hidden_size: int = Field(256, ge=1, le=CEILINGS["hidden_size"], description="model.hidden_size at most")
    max_num_layers: int = Field(
        CEILINGS["num_layers"], ge=1, le=CEILINGS["num_layers"], description="model.num_layers at most"
    )
    max_update_mmacs: float = Field(
        500.0, gt=0, description="an update's estimated work at most, in millions of multiply-adds (k2 x step x 3)"
    )
    max_k2: int = Field(CEILINGS["k2"], ge=1, le=CEILINGS["k2"], description="tbptt.k2 (and k1) at most")
    max_connections: int = Field(
        1024, ge=1, description="requests in flight and open WebSockets (503 beyond); open connections: 4x this"
    )
    max_connections_per_tenant: int = Field(
        0,
        ge=0,
        description="requests in flight and open WebSockets of one tenant (503 beyond); 0: three quarters of "
        "max_connections where the keys name two tenants or more, else no limit of its own; what one tenant at "
        "it leaves is guaranteed to the others in equal shares",
    )
    header_timeout: float = Field(10.0, gt=0, description="seconds a client has to send a request's headers (408)")
    body_timeout: float = Field(
        30.0, gt=0, description="seconds a request's body may pause (408), or a response wait for its client to read"
    )
    body_min_rate: float = Field(
        500.0,
        ge=0,
        description="bytes a second a request's body must come at (408), and a response's client read at (dropped), "
        "on average, after the first body_timeout seconds; 0: no minimum",
    )
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="a request's headers at most (431 beyond)")
    rate_limit: float = Field(0.0, ge=0, description="requests per second per tenant (429 beyond); 0: no limit")
    rate_burst: int = Field(100, ge=1, description="requests a tenant may send at once before the rate applies")
    ws_idle_seconds: float = Field(300.0, gt=0, description="close a WebSocket silent for this long")
    ws_send_timeout: float = Field(10.0, gt=0, description="close a WebSocket whose client stops reading this long")
    watch_queue: int = Field(64, ge=1, le=10_000, description="batches a watcher may fall behind before it is dropped")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
