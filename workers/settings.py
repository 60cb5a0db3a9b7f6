"""The one settings object: YAML defaults from ``configs/``, overridden by ``STREAMWARDEN_*`` variables.

Built once by the CLI (``load_settings``) and passed down; nothing reads the environment elsewhere.
Nested fields use ``__`` in variable names: ``STREAMWARDEN_ENGINE__MAX_BATCH_TOKENS=4096``.
Precedence, highest first: explicit overrides, environment, the YAML file, the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "base.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated")
    topic_prefix: str = Field("guard", description="Topic names are <prefix>.prompts, <prefix>.tokens, ...")
    partitions: int = Field(8, ge=1, description="Partitions of prompts, tokens, verdicts and control")
    replication: int = Field(1, ge=1, description="Replication factor of created topics")
    group_id: str = Field("streamwarden-guard", description="Consumer group of the guard workers")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="Larger messages are dead-lettered")
    dlq_payload_bytes: int = Field(64 << 10, ge=256, description="Raw payload kept in a dead letter")
    session_timeout_s: float = Field(10.0, gt=0, description="Consumer session timeout")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval")
    commit_interval_s: float = Field(0.5, gt=0, description="How often acked offsets are committed")
    producer_linger_ms: int = Field(0, ge=0, description="Producer linger for verdicts and control")
    broker_unreachable_exit_s: float = Field(
        120.0,
        ge=0,
        description="A worker that reaches no broker for this long exits with status 3 (0: never)",
    )
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        "PLAINTEXT", description="How clients connect: SASL authenticates, SSL encrypts (TLS)"
    )
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        "SCRAM-SHA-256", description="SASL mechanism (SASL_* protocols)"
    )
    sasl_username: str | None = Field(None, description="SASL user (SASL_* protocols)")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password; a secret: set it in the environment (STREAMWARDEN_KAFKA__SASL_PASSWORD)"
    )
    ssl_cafile: Path | None = Field(
        None, description="CA bundle of the brokers' certificates (TLS; default: the system's)"
    )

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"kafka.security_protocol={self.security_protocol} needs kafka.sasl_username and kafka.sasl_password"
            )
        return self


class RedisSettings(_Section):
    url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL (may hold a password)")
    namespace: str = Field("guard:v1", description="Prefix of every key this service writes")
    ttl_s: int = Field(24 * 3600, ge=60, description="Idle conversations expire after this")
    finished_ttl_s: int = Field(
        600,
        ge=1,
        description="A turn that has ended (final chunk or cut-off) expires after this instead: its token log "
        "is not needed again, and keeping it for ttl_s would make Redis grow with every conversation of the day",
    )


class EngineSettings(_Section):
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto = bfloat16 on CUDA and on CPUs with bfloat16 instructions (AVX512_BF16, AMX), "
        "float32 on other CPUs",
    )
    max_batch_tokens: int = Field(8192, ge=1, description="New tokens in one forward, at most")
    max_batch_rows: int = Field(256, ge=1, description="Conversations in one forward, at most")
    max_wait_ms: float = Field(2.0, ge=0, description="How long the first queued request waits for others")
    kv_budget_bytes: int = Field(2 << 30, ge=1 << 20, description="KV cache memory budget")
    page_size: int = Field(16, ge=1, description="Tokens per KV page")
    cpu_threads: int = Field(
        1,
        ge=0,
        description="torch threads when the engine runs on CPU (0 = torch's default); spinning OpenMP "
        "threads compete with the event loop and the broker on small machines",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8: dynamic int8 linear layers in the backbone (CPU only; scores within a tested "
        "bound of float32, see docs/benchmarks.md); none: as loaded",
    )
    isolation: Literal["process", "thread"] = Field(
        "process",
        description="process: the model runs in its own engine process beside the worker (its forwards "
        "never wait for the worker's interpreter lock, nor the event loop for them); thread: in a thread "
        "of the worker process",
    )
    attention: Literal["auto", "padded", "paged", "varlen"] = Field(
        "auto",
        description="KV attention path: padded (transformers cache, gathered and padded per step), paged "
        "(attention over the KV pages), varlen (CUDA kernel reading the pages in place); auto = varlen "
        "on CUDA in 16-bit, else paged",
    )


class GuardSettings(_Section):
    backend: Literal["stream", "cascade", "prefilter"] = Field(
        "cascade",
        description="Which guard judges: the stream model alone, or the prefilter cascading to it "
        "('prefilter' alone serves evaluation only: it judges no responses)",
    )
    checkpoint: str = Field(
        "auto",
        description="Stream checkpoint: a directory, a Hugging Face id in the local cache, 'default' "
        "(the shipped SmolLM2 heads) or 'auto' (real Qwen3Guard-Stream if cached, else 'default')",
    )
    allow_test_checkpoint: bool = Field(
        False, description="Accept random-weight test checkpoints (tests and benchmarks only)"
    )
    policy: Literal["strict", "loose"] = Field("strict", description="Default policy when an event names none")
    on_error: Literal["cutoff", "flag"] = Field(
        "cutoff",
        description="When the guard fails on a prompt or chunk (a backend error): publish an unsafe verdict "
        "with status guard_error and cut the message off (cutoff, fail closed) or only flag it (flag)",
    )
    on_state_loss: Literal["cutoff", "flag"] = Field(
        "cutoff",
        description="When a chunk has no context (its prompt never arrived within worker.prompt_wait_s, or "
        "the conversation's state was lost): an unsafe verdict with status context_lost that cuts the "
        "message off (cutoff, fail closed) or only flags the chunk (flag)",
    )
    prefilter_model: str = Field("default", description="Prefilter head directory, or 'default'")
    prefilter_encoder: str = Field("default", description="sentence-transformers model, or 'default' (MiniLM)")
    prefilter_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Precision of the prefilter's encoder: auto = the head's training precision on CUDA and "
        "on CPUs with bfloat16 instructions, float32 on other CPUs (which emulate bfloat16, 6x slower)",
    )


class WorkerSettings(_Section):
    worker_id: str = Field("", description="Identifies this worker in verdicts; default host:pid")
    max_in_flight: int = Field(4096, ge=1, description="Events being processed at once, at most")
    prompt_wait_s: float = Field(5.0, ge=0, description="How long a chunk waits for its prompt")
    reorder_window: int = Field(64, ge=0, description="Out-of-order chunks held per message")
    reorder_wait_s: float = Field(5.0, ge=0, description="How long a gap in seq may stay open")
    metrics_port: int = Field(
        0, ge=0, description="HTTP port of GET /metrics (Prometheus) and GET /healthz; 0 disables both"
    )
    metrics_host: str = Field("127.0.0.1", description="Address the metrics and health endpoint listens on")
    health_interval_s: float = Field(
        2.0, gt=0, description="How often the worker checks that Redis and a Kafka broker answer (/healthz)"
    )
    lag_warn_ms: float = Field(
        500.0,
        gt=0,
        description="Log a warning while verdicts trail their records by more than this (p90 over 10 s)",
    )


class ShadowSettings(_Section):
    """A second guard judging the same traffic without acting on it (``workers.shadow``)."""

    enabled: bool = Field(False, description="Run a shadow guard beside the live one")
    backend: Literal["stream", "cascade"] | None = Field(
        None, description="The shadow's guard backend (default: guard.backend)"
    )
    checkpoint: str | None = Field(
        None, description="The shadow's stream checkpoint, as guard.checkpoint (default: guard.checkpoint)"
    )
    policy: Literal["strict", "loose"] | None = Field(
        None,
        description="The policy the shadow judges every message by, whatever the event names (default: as "
        "the live guard: the event's policy, else guard.policy)",
    )
    queue_size: int = Field(
        10_000, ge=1, description="Events waiting for the shadow, at most; more are dropped and counted"
    )
    max_in_flight: int = Field(4096, ge=1, description="Events the shadow processes at once, at most")
    redis_namespace: str = Field(
        "", description="Prefix of the shadow's conversation state in Redis (default: <redis.namespace>:shadow)"
    )


class Settings(BaseSettings):
    """Everything streamwarden is configured by."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMWARDEN_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    engine: EngineSettings = EngineSettings()
    guard: GuardSettings = GuardSettings()
    worker: WorkerSettings = WorkerSettings()
    shadow: ShadowSettings = ShadowSettings()
    log_level: str = Field("INFO", description="Python logging level")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: readable lines on stderr; json: one JSON object per record (with the conversation, "
        "topic, partition and offset where a record concerns one), for log shippers",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.engine.max_batch_rows > self.engine.max_batch_tokens:
            raise ValueError("engine.max_batch_rows cannot exceed engine.max_batch_tokens")
        if self.shadow.redis_namespace == self.redis.namespace:
            raise ValueError("shadow.redis_namespace must differ from redis.namespace (the live state)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked, for logs and ``config show``."""
        return self.model_dump(mode="json")


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``STREAMWARDEN_CONFIG`` (default ``configs/base.yaml``)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("STREAMWARDEN_CONFIG", DEFAULT_CONFIG))
        if not path.exists():
            if "STREAMWARDEN_CONFIG" in os.environ:
                raise ConfigError(f"config file {path} does not exist")
            return {}
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return data


class ConfigError(ValueError):
    """Configuration that cannot be used; the message says which key and why."""


def _got(value: object) -> str:
    """The offending value for an error message; a whole section is left out (it may hold secrets)."""
    return "" if isinstance(value, dict) else f" (got {value!r})"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once, turning validation errors into one readable ``ConfigError``."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}{_got(err.get('input'))}" for err in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
