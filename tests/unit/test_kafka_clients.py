"""librdkafka configuration: security settings reach both clients, secrets come from files, sizes fit dead letters."""

from __future__ import annotations

import pytest

from worker.kafka_clients import OUTPUT_HEADROOM_BYTES, admin_config, consumer_config, producer_config
from worker.settings import SettingsError, WorkerSettings


def settings(**kafka: object) -> WorkerSettings:
    return WorkerSettings(kafka={"bootstrap_servers": "broker:9093", **kafka})


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_and_tls_settings_reach_consumer_producer_and_admin(mechanism, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-from-file\n")  # as Kubernetes mounts it, trailing newline included
    s = settings(
        security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="worker",
        sasl_password_file=str(password_file), ssl_ca_location="/etc/kafka/ca.pem",
        ssl_certificate_location="/etc/kafka/client.pem", ssl_key_location="/etc/kafka/client.key",
        ssl_key_password="key-pass",
    )
    expected = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": "worker",
        "sasl.password": "s3cret-from-file",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "ssl.certificate.location": "/etc/kafka/client.pem",
        "ssl.key.location": "/etc/kafka/client.key",
        "ssl.key.password": "key-pass",
    }
    for conf in (consumer_config(s), producer_config(s), admin_config(s)):
        assert {key: conf.get(key) for key in expected} == expected


def test_passthrough_config_wins_and_is_masked_in_the_logged_settings():
    s = settings(sasl_password="typed-secret", config={"sasl.password": "raw-secret", "sasl.oauthbearer.config": "x=y"})
    assert consumer_config(s)["sasl.password"] == "raw-secret"
    logged = str(s.masked())
    assert "typed-secret" not in logged and "raw-secret" not in logged and "x=y" not in logged


def test_unreadable_password_file_names_the_setting(tmp_path):
    with pytest.raises(SettingsError, match="WORKER_KAFKA__SASL_PASSWORD_FILE"):
        consumer_config(settings(sasl_password_file=str(tmp_path / "missing")))


def test_producer_takes_a_dead_letter_of_the_largest_accepted_record():
    s = WorkerSettings(input={"max_record_bytes": 5_000_000})
    assert producer_config(s)["message.max.bytes"] == 5_000_000 + OUTPUT_HEADROOM_BYTES
    # An explicit producer setting still wins.
    s = WorkerSettings(kafka={"producer_config": {"message.max.bytes": 1000}})
    assert producer_config(s)["message.max.bytes"] == 1000
