import pytest
from pydantic import SecretStr

from worker.kafka_clients import consumer_config, producer_config
from worker.settings import DeliveryMode, SettingsError, WorkerSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("WORKER_"):
            monkeypatch.delenv(key)


def test_defaults_load():
    settings = load_settings()
    assert settings.topics.input == ["events"]
    assert settings.delivery.mode is DeliveryMode.AT_LEAST_ONCE
    assert settings.http.port == 8080


def test_environment_names_are_the_contract(monkeypatch):
    env = {
        "WORKER_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "WORKER_KAFKA__GROUP_ID": "g",
        "WORKER_KAFKA__CONFIG": '{"fetch.max.bytes": 1000, "security.protocol": "SASL_SSL"}',
        "WORKER_TOPICS__INPUT": "a, b,c",
        "WORKER_TOPICS__LABELS": "",
        "WORKER_TOPICS__EMBEDDINGS": "emb",
        "WORKER_TOPICS__DEAD_LETTER": "dlq",
        "WORKER_MODEL__PATH": "/models/x",
        "WORKER_MODEL__DEVICE": "cuda:1",
        "WORKER_MODEL__LABELS_FILE": "/labels.yaml",
        "WORKER_MODEL__MAX_LENGTH": "128",
        "WORKER_BATCH__MAX_SIZE": "32",
        "WORKER_BATCH__MAX_TOKENS": "4096",
        "WORKER_BATCH__MAX_WAIT_MS": "15",
        "WORKER_HTTP__PORT": "9000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka.config == {"fetch.max.bytes": 1000, "security.protocol": "SASL_SSL"}
    assert s.topics.input == ["a", "b", "c"]
    assert s.topics.labels == ""
    assert str(s.model.path) == "/models/x" and s.model.device == "cuda:1"
    assert s.model.max_length == 128
    assert (s.batch.max_size, s.batch.max_tokens, s.batch.max_wait_ms) == (32, 4096, 15)
    assert s.http.port == 9000


def test_environment_wins_over_file(tmp_path, monkeypatch):
    config = tmp_path / "worker.yaml"
    config.write_text("batch:\n  max_size: 8\n  max_wait_ms: 5\ntopics:\n  input: from-file\n")
    monkeypatch.setenv("WORKER_BATCH__MAX_SIZE", "16")
    s = load_settings(config)
    assert s.batch.max_size == 16
    assert s.batch.max_wait_ms == 5
    assert s.topics.input == ["from-file"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WORKER_BATCH__MAX_SIZE", "0", "WORKER_BATCH__MAX_SIZE"),
        ("WORKER_BATCH__MAX_SIZE", "lots", "WORKER_BATCH__MAX_SIZE"),
        ("WORKER_BATCH__MAX_WAIT_MS", "-1", "WORKER_BATCH__MAX_WAIT_MS"),
        ("WORKER_KAFKA__CONFIG", "not json", "WORKER_KAFKA__CONFIG"),
        ("WORKER_MODEL__POOLING", "max", "WORKER_MODEL__POOLING"),
        ("WORKER_MODEL__DTYPE", "int8", "WORKER_MODEL__DTYPE"),
        ("WORKER_DELIVERY__MODE", "at_most_once", "WORKER_DELIVERY__MODE"),
        ("WORKER_OUTPUT__EMBEDDING_ENCODING", "base32", "WORKER_OUTPUT__EMBEDDING_ENCODING"),
        ("WORKER_BATCH__MAX_SIZ", "3", "unknown setting WORKER_BATCH__MAX_SIZ"),
        ("WORKER_BATCH__MAX_TOKENS", "100", "WORKER_BATCH__MAX_TOKENS"),
        ("WORKER_TOPICS__INPUT", "", "WORKER_TOPICS__INPUT"),
    ],
)
def test_bad_values_name_the_setting(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert expected in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_both_outputs_off_is_refused(monkeypatch):
    monkeypatch.setenv("WORKER_TOPICS__LABELS", "")
    monkeypatch.setenv("WORKER_TOPICS__EMBEDDINGS", "")
    with pytest.raises(SettingsError, match="both empty"):
        load_settings()


def test_bad_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not sections\n")
    with pytest.raises(SettingsError, match="bad.yaml"):
        load_settings(bad)
    with pytest.raises(SettingsError, match="nope.yaml"):
        load_settings(tmp_path / "nope.yaml")


def test_secrets_are_masked_when_logged(tmp_path):
    s = WorkerSettings(
        kafka={
            "sasl_username": "svc",
            "sasl_password": "hunter2",
            "ssl_key_password": "pem-pass",
            "config": {"sasl.oauthbearer.client.secret": "s3", "ssl.key.password": "k", "linger.ms": 7},
        }
    )
    text = str(s.masked())
    for secret in ("hunter2", "pem-pass", "s3'", "'k'"):
        assert secret not in text
    assert "linger.ms" in text and "svc" in text
    assert isinstance(s.kafka.sasl_password, SecretStr)
    assert "hunter2" not in repr(s)


def test_security_settings_reach_librdkafka(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    s = WorkerSettings(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password_file": str(secret),
            "ssl_ca_location": "/etc/ca.pem",
            "config": {"linger.ms": 50},
            "consumer_config": {"fetch.min.bytes": 10},
            "producer_config": {"linger.ms": 1},
        }
    )
    consumer, producer = consumer_config(s), producer_config(s)
    for conf in (consumer, producer):
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.username"] == "svc"
        assert conf["sasl.password"] == "from-a-file"
        assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert consumer["fetch.min.bytes"] == 10 and consumer["linger.ms"] == 50
    assert producer["linger.ms"] == 1 and "fetch.min.bytes" not in producer
    assert consumer["enable.auto.commit"] is False
    assert producer["enable.idempotence"] is True


def test_exactly_once_gets_a_transactional_id_per_instance():
    s = WorkerSettings(delivery={"mode": "exactly_once", "transactional_id_prefix": "cls", "instance_id": "pod-7"})
    assert producer_config(s)["transactional.id"] == "cls-pod-7"
    assert "transactional.id" not in producer_config(WorkerSettings())


def test_password_and_password_file_together_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="sasl_password"):
        load_settings_from({"kafka": {"sasl_password": "a", "sasl_password_file": str(tmp_path)}}, tmp_path)


def load_settings_from(data, tmp_path):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path)
