"""The Deployment and its ConfigMap: what the worker runs with, and how the pod is guarded."""

from __future__ import annotations

import os

import pytest
import yaml

from worker.settings import DeliveryMode, load_settings

from . import rendering
from .rendering import VALUE_SETS, one, rendered_worker, worker_container

FAKE_SECRETS = {
    ("kafka-user", "user"): "alice",
    ("kafka-client-tls", "key-password"): "key-secret",
}


def pod_spec(manifests):
    return one(manifests, "Deployment")["spec"]["template"]["spec"]


def env_of(container):
    return {entry["name"]: entry for entry in container.get("env", [])}


def mounts_of(container):
    return {mount["mountPath"]: mount for mount in container["volumeMounts"]}


def volumes_of(manifests):
    return {volume["name"]: volume for volume in pod_spec(manifests)["volumes"]}


def volume_at(manifests, container, path):
    """The volume mounted at the directory that holds `path`."""
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"nothing is mounted above {path}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return mount, volumes_of(manifests)[mount["name"]]


# What the worker runs with ---------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_container_runs_encoder_worker_with_the_mounted_config(helm_bin, value_set):
    worker = rendered_worker(value_set)
    assert worker.command == ["encoder-worker", "run", "--config", worker.config_path]
    container = worker_container(one(worker.manifests, "Deployment"))
    mount, volume = volume_at(worker.manifests, container, worker.config_path)
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == one(worker.manifests, "ConfigMap")["metadata"]["name"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_config_and_env_load_as_worker_settings(helm_bin, value_set, monkeypatch, tmp_path):
    # The same loader the container runs: unknown or mistyped settings would fail here.
    worker = rendered_worker(value_set)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(worker.config_yaml)
    for name in [n for n in os.environ if n.startswith("WORKER_")]:
        monkeypatch.delenv(name)
    for name, value in worker.local_env(pod_name="rel-encoder-worker-7d9f-abcde", secrets=FAKE_SECRETS).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config_file)
    values = yaml.safe_load((rendering.CHART_DIR / "values.yaml").read_text())["worker"]
    if value_set != "default":
        overrides = yaml.safe_load((rendering.VALUE_SETS_DIR / f"{value_set}-values.yaml").read_text())
        values = _merge(values, overrides.get("worker", {}))
    assert settings.kafka.bootstrap_servers == values["kafka"]["bootstrap_servers"]
    assert settings.kafka.group_id == values["kafka"]["group_id"]
    assert settings.topics.input == values["topics"]["input"]
    assert settings.batch.max_size == values["batch"]["max_size"]
    assert settings.delivery.mode.value == values["delivery"]["mode"]
    assert settings.delivery.instance_id == "rel-encoder-worker-7d9f-abcde"
    assert settings.model.num_threads == 2  # from the CPU limit


def _merge(base, override):
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and key in base else value
    return merged


def test_config_checksum_rolls_the_pods_when_the_config_changes(helm_bin):
    def checksum(values):
        deployment = one(rendering.render("default", values), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(None) == checksum(None)
    assert checksum(None) != checksum({"worker": {"batch": {"max_size": 32}}})


def test_explicit_thread_count_is_not_overridden(helm_bin):
    worker = rendered_worker("default", {"worker": {"model": {"num_threads": 3}}})
    assert "WORKER_MODEL__NUM_THREADS" not in env_of(worker_container(one(worker.manifests, "Deployment")))
    assert worker.config["model"]["num_threads"] == 3


def test_instance_id_is_the_pod_name(rendered):
    env = env_of(worker_container(one(rendered["exactly-once"], "Deployment")))
    assert env["WORKER_DELIVERY__INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_exactly_once_value_set_turns_transactions_on(helm_bin):
    worker = rendered_worker("exactly-once")
    assert worker.config["delivery"]["mode"] == DeliveryMode.EXACTLY_ONCE.value
    assert worker.config["delivery"]["transactional_id_prefix"] == "moderation"
    assert worker.config["topics"]["input"] == ["comments", "posts"]


# Pod hardening ------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pod_runs_non_root_with_a_read_only_root_file_system(rendered, value_set):
    manifests = rendered[value_set]
    spec = pod_spec(manifests)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]
    containers = spec["containers"] + spec.get("initContainers", [])
    for container in containers:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert security["runAsNonRoot"] is True, container["name"]
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        # Everything the process may write to is an emptyDir.
        env = env_of(container)
        for writable in ["/tmp", env["HOME"]["value"], env["HF_HOME"]["value"]]:
            _, volume = volume_at(manifests, container, writable + "/x")
            assert "emptyDir" in volume, (container["name"], writable)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_worker_runs_offline(rendered, value_set):
    env = env_of(worker_container(one(rendered[value_set], "Deployment")))
    assert env["HF_HUB_OFFLINE"]["value"] == "1"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_use_the_worker_endpoints_on_its_port(rendered, value_set):
    manifests = rendered[value_set]
    container = worker_container(one(manifests, "Deployment"))
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    assert container["ports"] == [{"name": "http", "containerPort": config["http"]["port"], "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # Liveness only starts once the startup probe passes: it must outlast loading and warm-up.
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/readyz", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_grace_period_outlasts_a_drain(rendered, value_set):
    manifests = rendered[value_set]
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    grace = pod_spec(manifests)["terminationGracePeriodSeconds"]
    assert grace >= config["delivery"]["drain_timeout_s"] + 15


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_requests_and_limits_are_set(rendered, value_set):
    resources = worker_container(one(rendered[value_set], "Deployment"))["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind


def test_default_profile_is_cpu_only(rendered):
    manifests = rendered["default"]
    container = worker_container(one(manifests, "Deployment"))
    assert not any("gpu" in name for name in container["resources"]["limits"])
    assert container["image"] == "encoder-worker:0.1.0-cpu"
    spec = pod_spec(manifests)
    assert "nodeSelector" not in spec and "tolerations" not in spec and "affinity" not in spec
    # The model comes from the image: no model volume.
    assert "model" not in volumes_of(manifests)
    assert yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])["model"]["path"] is None


def test_gpu_profile_requests_a_gpu_on_gpu_nodes(rendered):
    manifests = rendered["gpu"]
    container = worker_container(one(manifests, "Deployment"))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == "encoder-worker:0.1.0-cuda"
    spec = pod_spec(manifests)
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "nvidia.com/gpu.present": "true"}
    taints = {toleration["key"] for toleration in spec["tolerations"]}
    assert taints == {"nvidia.com/gpu", "dedicated"}
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"
    assert yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])["model"]["device"] == "cuda"


# Kafka credentials -------------------------------------------------------------------------


def test_credentials_come_from_the_named_secrets(helm_bin):
    worker = rendered_worker("sasl-tls")
    manifests = worker.manifests
    container = worker_container(one(manifests, "Deployment"))
    kafka = worker.config["kafka"]
    assert kafka["security_protocol"] == "SASL_SSL"
    assert kafka["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "sasl_password" not in kafka and "ssl_key_password" not in kafka

    def secret_file(path):
        mount, volume = volume_at(manifests, container, path)
        assert mount["readOnly"] is True
        item = next(i for i in volume["secret"]["items"] if i["path"] == path[len(mount["mountPath"]) + 1:])
        return volume["secret"]["secretName"], item["key"]

    assert secret_file(kafka["sasl_password_file"]) == ("kafka-user", "password")
    assert secret_file(kafka["ssl_ca_location"]) == ("kafka-cluster-ca", "ca.crt")
    assert secret_file(kafka["ssl_certificate_location"]) == ("kafka-client-tls", "tls.crt")
    assert secret_file(kafka["ssl_key_location"]) == ("kafka-client-tls", "tls.key")
    env = env_of(container)
    assert env["WORKER_KAFKA__SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-user", "key": "user"}
    assert env["WORKER_KAFKA__SSL_KEY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-client-tls",
        "key": "key-password",
    }
    # KEDA reads the very same Secrets.
    auth = one(manifests, "TriggerAuthentication")
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("kafka-user", "user"),
        "password": ("kafka-user", "password"),
        "ca": ("kafka-cluster-ca", "ca.crt"),
        "cert": ("kafka-client-tls", "tls.crt"),
        "key": ("kafka-client-tls", "tls.key"),
        "keyPassword": ("kafka-client-tls", "key-password"),
    }


@pytest.mark.parametrize(
    ("auth", "protocol"),
    [
        ({"tls": {"enabled": True}}, "SSL"),
        ({"sasl": {"mechanism": "PLAIN", "existingSecret": "user"}}, "SASL_PLAINTEXT"),
        ({}, None),
    ],
)
def test_security_protocol_follows_kafka_auth(helm_bin, auth, protocol):
    worker = rendered_worker("default", {"kafkaAuth": auth})
    assert worker.config["kafka"].get("security_protocol") == protocol
    if auth.get("tls") and not auth["tls"].get("caSecret"):
        # TLS without a CA Secret verifies the brokers with the image's system CAs.
        assert "ssl_ca_location" not in worker.config["kafka"]


# Model sources -----------------------------------------------------------------------------


def test_model_from_a_pvc_is_mounted_read_only(rendered):
    manifests = rendered["exactly-once"]
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    container = worker_container(one(manifests, "Deployment"))
    mount = mounts_of(container)[config["model"]["path"]]
    assert mount == {"name": "model", "mountPath": "/models", "readOnly": True, "subPath": "modernbert-moderation"}
    assert volumes_of(manifests)["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}


def test_model_from_an_init_container_is_downloaded_before_the_worker_starts(rendered):
    manifests = rendered["model-init"]
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    spec = pod_spec(manifests)
    (init,) = spec["initContainers"]
    env = env_of(init)
    assert env["MODEL_DIR"]["value"] == config["model"]["path"] == "/models"
    assert env["MODEL_REPO"]["value"] == "example-org/modernbert-moderation"
    assert env["HF_HUB_OFFLINE"]["value"] == "0"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert "snapshot_download" in init["command"][-1]
    assert mounts_of(init)["/models"].get("readOnly") is not True
    assert mounts_of(worker_container(one(manifests, "Deployment")))["/models"]["readOnly"] is True
    assert "emptyDir" in volumes_of(manifests)["model"]
    assert init["image"] == worker_container(one(manifests, "Deployment"))["image"]
