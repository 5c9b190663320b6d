"""The worker's one settings object.

Built once, in the entry point, from environment variables (prefix ``WORKER_``, ``__`` for
nesting) and an optional YAML file; the environment wins over the file. Every field's
description is its documentation: the README's settings table is generated from it.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

ENV_PREFIX = "WORKER_"
ENV_NESTED_DELIMITER = "__"

# librdkafka properties whose values must never reach a log line.
SECRET_CONFIG_MARKERS = ("password", "secret", "key.pem", "certificate.pem", "token", "sasl.oauthbearer.config")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it the way a user would set it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputFormat(str, Enum):
    JSON = "json"
    TEXT = "text"


class Pooling(str, Enum):
    MEAN = "mean"
    CLS = "cls"


class Overlength(str, Enum):
    TRUNCATE = "truncate"
    DEAD_LETTER = "dead_letter"


class EmbeddingEncoding(str, Enum):
    JSON = "json"
    BASE64_F32 = "base64-f32"
    BASE64_F16 = "base64-f16"


class DeliveryMode(str, Enum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class LogFormat(str, Enum):
    JSON = "json"
    TEXT = "text"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _read_secret_file(path: Path | None) -> SecretStr | None:
    if path is None:
        return None
    try:
        return SecretStr(path.read_text().strip())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        "localhost:9092", min_length=1, description="Comma-separated `host:port` list of brokers."
    )
    group_id: str = Field("encoder-worker", min_length=1, description="Consumer group shared by all replicas.")
    client_id: str = Field("encoder-worker", min_length=1, description="Client id reported to the brokers.")
    startup_timeout_s: float = Field(
        30.0, gt=0, description="How long start-up waits for a broker to answer before failing."
    )
    security_protocol: str | None = Field(
        None, description="`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (librdkafka `security.protocol`)."
    )
    sasl_mechanism: str | None = Field(
        None, description="`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, … (librdkafka `sasl.mechanism`)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (masked in logs).")
    sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (a mounted Kubernetes Secret); read at start-up."
    )
    ssl_ca_location: Path | None = Field(None, description="CA bundle used to verify the brokers (PEM file).")
    ssl_certificate_location: Path | None = Field(None, description="Client certificate for mutual TLS (PEM).")
    ssl_key_location: Path | None = Field(None, description="Client private key for mutual TLS (PEM).")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client private key (masked).")
    config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="JSON object of extra librdkafka properties for consumer and producer "
        '(SASL, SSL, tuning), e.g. `{"fetch.max.bytes": 52428800}`. Wins over the worker\'s defaults.',
    )
    consumer_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra librdkafka properties for the consumer only."
    )
    producer_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra librdkafka properties for the producer only."
    )

    @model_validator(mode="after")
    def _password_sources(self) -> KafkaSettings:
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ValueError("set sasl_password or sasl_password_file, not both")
        return self

    def password(self) -> SecretStr | None:
        return self.sasl_password or _read_secret_file(self.sasl_password_file)


class TopicSettings(_Section):
    input: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["events"],
        min_length=1,
        description="Input topic, or a comma-separated list of topics.",
    )
    labels: str = Field("events.labels", description="Output topic for labels; empty switches labels off.")
    embeddings: str = Field(
        "events.embeddings", description="Output topic for embeddings; empty switches embeddings off."
    )
    dead_letter: str = Field(
        "events.dead-letter", min_length=1, description="Topic for records that cannot be processed, with the reason."
    )

    _split_input = field_validator("input", mode="before")(_split_csv)


class ModelSettings(_Section):
    path: Path | None = Field(
        None, description="Local Hugging Face model directory. Default: the packaged all-MiniLM-L6-v2."
    )
    device: str = Field("auto", description="`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.")
    labels_file: Path | None = Field(
        None,
        description="YAML/JSON labels file (labels scored by cosine similarity; see docs/labels.md). Default: "
        "the packaged moderation labels when the model has no classification head. Set with a head model, "
        "the head is not used. Reloaded while running when it changes.",
    )
    labels_reload_s: float = Field(
        5.0,
        ge=0,
        description="How often the labels file is checked for changes; a changed file is embedded between "
        "windows and used from the next one (a file that does not load changes nothing). 0 switches it off.",
    )
    max_length: int = Field(
        256, gt=1, le=8192, description="Tokens per text; longer texts are truncated (or dead-lettered)."
    )
    overlength: Overlength = Field(
        Overlength.TRUNCATE, description="`truncate` long texts, or send them to the dead-letter topic."
    )
    pooling: Pooling = Field(Pooling.MEAN, description="Embedding pooling over the last hidden state: `mean` or `cls`.")
    normalize: bool = Field(True, description="L2-normalise embeddings.")
    dtype: str = Field(
        "auto",
        pattern=r"^(auto|float32|float16|bfloat16)$",
        description="Weights' precision: `float32`, `float16`, `bfloat16`, or `auto`: float16 on CUDA; on a CPU, "
        "bfloat16 where it computes it natively (AMX or AVX512-BF16) and bfloat16 outputs match float32 ones on "
        "probe texts at start-up (cosine ≥ 0.999, same top label), else float32. The start-up log says which and why.",
    )
    num_threads: int = Field(
        0, ge=0, description="CPU threads for torch; 0 means one per available core."
    )
    trace: bool = Field(
        True,
        description="Run the forward pass as a TorchScript trace, made at start-up and checked against the "
        "eager pass (kept eager if they differ): no Python between the model's ops, so the other stages "
        "do not hold it up.",
    )
    name: str | None = Field(None, description="Model name written into outputs. Default: the directory's name.")
    trim_headroom_mb: int = Field(
        64,
        ge=0,
        description="After a forward pass, hand freed heap memory back to the system when the worker's RSS is "
        "more than this many MiB above its level after warm-up (glibc; 0 switches it off).",
    )


class BatchSettings(_Section):
    max_size: int = Field(64, gt=0, le=4096, description="Most events in one forward pass.")
    max_tokens: int = Field(
        4096,
        gt=0,
        description="Most padded tokens in one forward pass (longest sequence × batch size); bounds memory. "
        "Sized for CPUs (larger passes run slower per token there); raise it on a GPU (16384 to 65536).",
    )
    max_wait_ms: int = Field(
        50, ge=0, description="Longest an event waits for its batch to fill; bounds latency at light load."
    )
    sort_window: int = Field(
        512,
        gt=0,
        description="Events gathered before sorting by length into batches; larger means less padding, "
        "more memory and latency. Keep it at or above `max_size`; 1 turns sorting off (batches in arrival order).",
    )
    close_when_idle: bool = Field(
        True,
        description="Close the open window at once when no window is waiting for the model instead of "
        "waiting out `max_wait_ms`: low latency at light load, and the next window is ready when the model "
        "finishes the one in hand; under load windows fill while the one before them waits.",
    )
    pass_overhead_tokens: int | None = Field(
        None,
        ge=0,
        description="What one more forward pass costs, in padded tokens; decides how sorted windows are "
        "cut into batches (higher: fewer, larger batches). Default: measured at warm-up.",
    )
    queue_depth: int = Field(
        1, gt=0, le=16, description="Windows waiting for the model; beyond it the poll loop holds closed windows "
        "and takes one record per turn."
    )
    pause_after_ms: int = Field(
        5000,
        ge=0,
        description="Pause the partitions once windows have waited this long for the model without it taking "
        "one (a stuck or very slow model). Pausing makes librdkafka drop and later re-fetch its prefetched "
        "records; 0 pauses as soon as the queue is full.",
    )


class InputSettings(_Section):
    format: InputFormat = Field(
        InputFormat.JSON, description='`json` (`{"id", "text", "metadata"}`) or `text` (the value is the text).'
    )
    max_record_bytes: int = Field(
        1_000_000,
        gt=0,
        description="Larger records (key, value and headers) go to the dead-letter topic before decoding, "
        "without their value. Keep it below the dead-letter topic's `max.message.bytes`.",
    )
    max_text_chars: int = Field(
        100_000, gt=0, description="Longer texts go to the dead-letter topic before tokenization."
    )


class OutputSettings(_Section):
    top_k: int = Field(3, gt=0, description="Labels (with scores) written per event.")
    embedding_encoding: EmbeddingEncoding = Field(
        EmbeddingEncoding.JSON,
        description="`json` float array, or compact `base64-f32` / `base64-f16` (little-endian).",
    )


class DeliverySettings(_Section):
    mode: DeliveryMode = Field(
        DeliveryMode.AT_LEAST_ONCE,
        description="`at_least_once` (commit after delivery) or `exactly_once` (Kafka transactions).",
    )
    transactional_id_prefix: str = Field(
        "encoder-worker",
        min_length=1,
        description="Exactly-once only: prefix of each replica's `transactional.id` (prefix + replica identity).",
    )
    instance_id: str | None = Field(
        None,
        description="This replica's stable identity (default: the host name, i.e. the pod name).",
    )
    commit_interval_ms: int = Field(
        500, gt=0, description="At-least-once: how often delivered offsets are committed (also at once "
        "whenever everything consumed has been delivered)."
    )
    drain_timeout_s: float = Field(
        60.0,
        gt=0,
        description="On shutdown or rebalance, how long to wait for in-flight events to be published "
        "and committed; keep it below `max.poll.interval.ms` and the pod's termination grace period.",
    )


class HttpSettings(_Section):
    port: int = Field(8080, ge=0, le=65535, description="Port of `/metrics`, `/livez`, `/readyz`; 0 switches it off.")
    host: str = Field("0.0.0.0", description="Address the HTTP server binds.")


class ProcessSettings(_Section):
    count: int = Field(
        1,
        ge=1,
        le=32,
        description="Worker processes in this container, each a member of the consumer group with its own "
        "copy of the model, under one supervisor that serves the HTTP port: more than one interpreter to "
        "feed a fast GPU (docs/deployment.md). Process i's own HTTP server listens on 127.0.0.1, port "
        "`http.port` + 1 + i.",
    )


class LogSettings(_Section):
    format: LogFormat = Field(LogFormat.JSON, description="`json` lines, or `text` for a terminal.")
    level: str = Field(
        "INFO", pattern=r"^(?i:debug|info|warning|error|critical)$", description="Log level."
    )


class TelemetrySettings(_Section):
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint (e.g. `http://collector:4318`) for traces and metrics."
    )
    console_traces: bool = Field(False, description="Print finished spans to stderr (debugging).")
    service_name: str = Field("encoder-worker", description="`service.name` of traces and metrics.")
    liveness_timeout_s: float = Field(
        60.0,
        gt=0,
        description="`/livez` fails when a loop has not reported for this long, or an assigned, unpaused partition "
        "with records waiting has fetched nothing for this long.",
    )


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    input: InputSettings = Field(default_factory=InputSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    process: ProcessSettings = Field(default_factory=ProcessSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so that it wins over the YAML file passed as init arguments.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _outputs(self) -> WorkerSettings:
        if not self.topics.labels and not self.topics.embeddings:
            raise ValueError("topics: labels and embeddings are both empty; the worker would produce nothing")
        if self.batch.max_tokens < self.model.max_length:
            raise ValueError(
                f"WORKER_BATCH__MAX_TOKENS ({self.batch.max_tokens}) must be at least "
                f"WORKER_MODEL__MAX_LENGTH ({self.model.max_length}): one full-length text must fit in a batch"
            )
        overlap = {self.topics.labels, self.topics.embeddings, self.topics.dead_letter} & set(self.topics.input)
        if overlap:
            raise ValueError(f"topics: {sorted(overlap)} is both an input and an output")
        return self

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked: safe to log."""
        data = self.model_dump(mode="json")
        for section in ("config", "consumer_config", "producer_config"):
            data["kafka"][section] = mask_config(data["kafka"][section])
        return data


def mask_config(config: dict[str, Any]) -> dict[str, Any]:
    return {
        key: "**********" if any(marker in key.lower() for marker in SECRET_CONFIG_MARKERS) else value
        for key, value in config.items()
    }


def env_name(loc: tuple[int | str, ...]) -> str:
    """('batch', 'max_size') -> 'WORKER_BATCH__MAX_SIZE'."""
    parts = [str(part).upper() for part in loc if isinstance(part, str)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts) if parts else ENV_PREFIX.rstrip("_")


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    message = error.get("msg", "invalid value")
    if error.get("type") == "extra_forbidden":
        return f"unknown setting {env_name(loc)}"
    if loc:
        value = error.get("input")
        shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {str(value)[:80]!r})"
        return f"invalid setting {env_name(loc)}: {message}{shown}"
    # Model-level validators name the section in their own message.
    return f"invalid settings: {message.removeprefix('Value error, ')}"


def load_settings(config_file: Path | None = None) -> WorkerSettings:
    """Build the settings from the environment and an optional YAML file.

    Raises SettingsError with one line per problem, each naming the setting.
    """
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text())
        except OSError as exc:
            raise SettingsError(f"--config {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"--config {config_file}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"--config {config_file}: the top level must be a mapping of sections")
        file_values = loaded or {}
    try:
        return WorkerSettings(**file_values)
    except ValidationError as exc:
        raise SettingsError("\n".join(_describe(error) for error in exc.errors())) from None
    except PydanticSettingsError as exc:
        # pydantic-settings reports unparsable JSON per section; find the variable that holds it.
        raise SettingsError(_describe_unparsable_json() or str(exc)) from None


def _describe_unparsable_json() -> str | None:
    for section_name, section in WorkerSettings.model_fields.items():
        model = section.annotation
        for field_name, field in getattr(model, "model_fields", {}).items():
            if "dict" not in str(field.annotation):
                continue
            name = env_name((section_name, field_name))
            raw = os.environ.get(name)
            if raw is None:
                continue
            try:
                json.loads(raw)
            except ValueError as exc:
                return f"invalid setting {name}: not a JSON object ({exc})"
    return None
