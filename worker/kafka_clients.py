"""librdkafka configuration and client construction. Knows nothing of torch.

Precedence, lowest first: the worker's defaults, the typed security settings, `kafka.config`
(both clients), then `kafka.consumer_config` / `kafka.producer_config`.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from worker.settings import DeliveryMode, KafkaSettings, SettingsError, WorkerSettings

log = logging.getLogger(__name__)

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    # Bounded prefetch: with a deep backlog librdkafka would otherwise buffer up to 64 MB.
    "queued.max.messages.kbytes": 16384,
    # Once that queue is full librdkafka waits this long before fetching again (1 s by default, which
    # its docs say to lower with a lower bound): a fast worker drained the 16 MB sooner and then
    # waited. 20,000 records of 4 KB, near-free model: ~10,800 -> ~14,000 events/s (3 paired runs).
    "fetch.queue.backoff.ms": 50,
    # Light-load latency: Kafka answers a fetch as soon as data arrives, but some Kafka-protocol
    # brokers (Tansu, the local default) hold each fetch for the whole wait. Costs at most 20 empty
    # fetches a second per broker while idle.
    "fetch.wait.max.ms": 50,
    "isolation.level": "read_committed",
    # Feeds the consumer-lag gauge and the broker-reachability part of /readyz.
    "statistics.interval.ms": 5000,
}

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
}


def poll_ready(consumer: Consumer, timeout_s: float, limit: int) -> list[Any]:
    """Wait up to `timeout_s` for the first record, then take what else is already fetched (up to `limit`).

    librdkafka's batch consume() waits for the whole chunk or the whole timeout; at light load
    that wait would add up to the timeout to every event's latency.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if limit <= 1:
        return [first]
    return [first, *consumer.consume(num_messages=limit - 1, timeout=0)]


# What an output may add to the input record it carries (key and headers are copied): the worker's
# own headers, a dead-letter reason, an embedding vector.
OUTPUT_HEADROOM_BYTES = 1 << 20


def instance_id(settings: WorkerSettings) -> str:
    return settings.delivery.instance_id or socket.gethostname()


def _common(kafka: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers, "client.id": kafka.client_id}
    optional = {
        "security.protocol": kafka.security_protocol,
        "sasl.mechanism": kafka.sasl_mechanism,
        "sasl.username": kafka.sasl_username,
        "ssl.ca.location": kafka.ssl_ca_location,
        "ssl.certificate.location": kafka.ssl_certificate_location,
        "ssl.key.location": kafka.ssl_key_location,
    }
    conf.update({key: str(value) for key, value in optional.items() if value is not None})
    try:
        password = kafka.password()
    except ValueError as exc:
        raise SettingsError(f"invalid setting WORKER_KAFKA__SASL_PASSWORD_FILE: {exc}") from None
    if password is not None:
        conf["sasl.password"] = password.get_secret_value()
    if kafka.ssl_key_password is not None:
        conf["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    conf.update(kafka.config)
    return conf


def consumer_config(settings: WorkerSettings) -> dict[str, Any]:
    kafka = settings.kafka
    conf = {**CONSUMER_DEFAULTS, **_common(kafka), "group.id": kafka.group_id}
    conf.update(kafka.consumer_config)
    return conf


def producer_config(settings: WorkerSettings) -> dict[str, Any]:
    kafka = settings.kafka
    # Room for a dead letter of the largest record the worker accepts, plus what the worker adds
    # (headers, an embedding): librdkafka's 1,000,000 default would refuse it and stop the worker.
    largest = settings.input.max_record_bytes + OUTPUT_HEADROOM_BYTES
    conf = {**PRODUCER_DEFAULTS, "message.max.bytes": largest, **_common(kafka)}
    if settings.delivery.mode is DeliveryMode.EXACTLY_ONCE:
        conf["transactional.id"] = f"{settings.delivery.transactional_id_prefix}-{instance_id(settings)}"
    conf.update(kafka.producer_config)
    return conf


def admin_config(settings: WorkerSettings) -> dict[str, Any]:
    conf = _common(settings.kafka)
    # Only connection and security properties mean anything to the admin client.
    return {
        key: value
        for key, value in conf.items()
        if key in ("bootstrap.servers", "client.id", "socket.timeout.ms", "request.timeout.ms")
        or key.startswith(("security.", "sasl.", "ssl.", "socket.", "broker.", "client."))
    }


def check_client_configs(settings: WorkerSettings) -> None:
    """Fail at start-up, naming the setting, when librdkafka refuses a consumer or producer property.

    Checked before the model loads, so that a typo costs a second rather than a model load and a
    traceback later.
    """
    for kind, build, conf in (
        ("consumer", Consumer, consumer_config(settings)),
        ("producer", Producer, producer_config(settings)),
    ):
        try:
            client = build(conf)
        except (KafkaException, ValueError, TypeError) as exc:
            detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            raise SettingsError(
                f"invalid setting WORKER_KAFKA__CONFIG or WORKER_KAFKA__{kind.upper()}_CONFIG: "
                f"the {kind} refused it: {detail}"
            ) from None
        if isinstance(client, Consumer):
            client.close()


def check_topics(settings: WorkerSettings, timeout_s: float = 30.0) -> None:
    """Fail at start-up, naming the setting, when the brokers are unreachable or a topic is missing.

    Lists all topics rather than asking for each by name, which would auto-create them on
    brokers that allow it.
    """
    # A refused login or TLS handshake shows only here, not in list_topics()'s "transport failure".
    client_errors: list[str] = []
    try:
        admin = AdminClient({**admin_config(settings), "error_cb": lambda error: client_errors.append(error.str())})
    except KafkaException as exc:  # e.g. a TLS key that its password does not open
        raise SettingsError(f"the Kafka client refused its settings (WORKER_KAFKA__*): {exc.args[0].str()}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata = admin.list_topics(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            if time.monotonic() >= deadline:
                last = f"; last client error: {client_errors[-1]}" if client_errors else ""
                raise SettingsError(
                    f"WORKER_KAFKA__BOOTSTRAP_SERVERS={settings.kafka.bootstrap_servers!r}: "
                    f"no broker answered within {timeout_s:.0f}s ({exc.args[0]}){last}"
                ) from None
            log.warning("brokers not reachable yet, retrying", extra={"error": str(exc.args[0])})
            time.sleep(1.0)
    existing = set(metadata.topics)
    wanted = [("WORKER_TOPICS__INPUT", topic) for topic in settings.topics.input]
    wanted += [
        ("WORKER_TOPICS__LABELS", settings.topics.labels),
        ("WORKER_TOPICS__EMBEDDINGS", settings.topics.embeddings),
        ("WORKER_TOPICS__DEAD_LETTER", settings.topics.dead_letter),
    ]
    missing = [f"{name}={topic!r}" for name, topic in wanted if topic and topic not in existing]
    if missing:
        raise SettingsError("topic does not exist: " + ", ".join(missing))


def is_fatal(error: KafkaError) -> bool:
    return bool(error.fatal())
