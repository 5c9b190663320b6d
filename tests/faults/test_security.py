"""SASL and TLS settings reach librdkafka, secrets may come from files, and no secret is ever logged.

The local broker speaks plaintext only, so a worker configured for SASL or TLS cannot connect to it: the
tests check what can be checked honestly there. The masked settings line is logged before connecting;
librdkafka's own log lines show it attempted the configured mechanism; the process stops with exit
code 2 naming the setting; and neither stdout nor stderr contains a secret.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import orjson
import pytest

from tests.support.kafka_support import worker_env

pytestmark = pytest.mark.integration

SECRETS = {
    "file": "pw-from-a-mounted-secret-7f3a",
    "env": "pw-from-the-environment-91c2",
    "passthrough": "pw-in-kafka-config-55e0",
    "key": "tls-key-password-0d4b",
}


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=90)


def effective_settings(output: str) -> dict:
    line = next(line for line in output.splitlines() if '"effective settings"' in line)
    return orjson.loads(line)["settings"]


def assert_no_secret(output: str) -> None:
    leaked = [name for name, secret in SECRETS.items() if secret in output]
    assert not leaked, f"secrets logged: {leaked}"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_settings_reach_librdkafka_and_no_secret_is_logged(mechanism, bootstrap, worker_topics, group, tmp_path):
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        pytest.skip("expects a plaintext-only broker that refuses SASL (the local Tansu broker)")
    password_file = tmp_path / "sasl-password"
    password_file.write_text(SECRETS["file"] + "\n")
    env = worker_env(
        bootstrap, worker_topics, group,
        kafka__security_protocol="SASL_PLAINTEXT", kafka__sasl_mechanism=mechanism, kafka__sasl_username="worker",
        kafka__sasl_password_file=password_file, kafka__startup_timeout_s=4,
        kafka__producer_config={"sasl.password": SECRETS["passthrough"]},
    )
    result = run_worker(env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    # One line naming the setting, on stderr, for whoever reads `kubectl logs`.
    assert "WORKER_KAFKA__BOOTSTRAP_SERVERS" in result.stderr.splitlines()[-1]
    settings = effective_settings(result.stderr)
    assert settings["kafka"]["sasl_mechanism"] == mechanism and settings["kafka"]["sasl_username"] == "worker"
    assert settings["kafka"]["producer_config"]["sasl.password"] == "**********"
    # librdkafka tried the configured mechanism against the broker; the error line says so.
    assert f"SASL {mechanism} mechanism handshake failed" in result.stderr.splitlines()[-1]
    assert_no_secret(output)


def test_password_from_the_environment_is_masked(bootstrap, worker_topics, group):
    env = worker_env(
        bootstrap, worker_topics, group,
        kafka__security_protocol="SASL_PLAINTEXT", kafka__sasl_mechanism="SCRAM-SHA-512", kafka__sasl_username="worker",
        kafka__sasl_password=SECRETS["env"], kafka__startup_timeout_s=4,
        kafka__config={"sasl.password": SECRETS["passthrough"], "ssl.key.password": SECRETS["key"]},
    )
    result = run_worker(env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    settings = effective_settings(result.stderr)
    assert settings["kafka"]["sasl_password"] == "**********"
    assert settings["kafka"]["config"] == {"sasl.password": "**********", "ssl.key.password": "**********"}
    assert_no_secret(output)


def test_both_password_and_password_file_is_a_setting_error(bootstrap, worker_topics, group, tmp_path):
    password_file = tmp_path / "pw"
    password_file.write_text(SECRETS["file"])
    env = worker_env(bootstrap, worker_topics, group, kafka__sasl_password=SECRETS["env"],
                     kafka__sasl_password_file=password_file)
    result = run_worker(env)
    assert result.returncode == 2
    assert "sasl_password or sasl_password_file" in result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_tls_settings_reach_librdkafka_and_the_key_password_is_masked(bootstrap, worker_topics, group, tmp_path):
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        pytest.skip("expects a plaintext-only broker that refuses TLS (the local Tansu broker)")
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a throwaway certificate")
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=encoder-worker-test", "-passout", f"pass:{SECRETS['key']}"],
        check=True, capture_output=True,
    )

    def tls_env(key_password: str) -> dict[str, str]:
        return worker_env(
            bootstrap, worker_topics, group,
            kafka__security_protocol="SSL", kafka__ssl_ca_location=cert, kafka__ssl_certificate_location=cert,
            kafka__ssl_key_location=key, kafka__ssl_key_password=key_password, kafka__startup_timeout_s=4,
        )

    # The right password opens the encrypted key: librdkafka gets as far as the (plaintext) broker.
    result = run_worker(tls_env(SECRETS["key"]))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "no broker answered" in result.stderr.splitlines()[-1]
    settings = effective_settings(result.stderr)
    assert settings["kafka"]["ssl_key_password"] == "**********" and settings["kafka"]["ssl_key_location"] == str(key)
    assert_no_secret(output)

    # A wrong one is refused by librdkafka when it loads the key: a setting error, not a traceback.
    result = run_worker(tls_env("not-the-key-password"))
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.splitlines()[-1]
    assert "WORKER_KAFKA__" in last and "ssl.key.location" in last and "Traceback" not in result.stderr
    assert "not-the-key-password" not in result.stdout + result.stderr
