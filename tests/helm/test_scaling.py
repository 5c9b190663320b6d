"""Who owns the replica count: fixed replicas, KEDA on consumer lag, or a plain HPA."""

from __future__ import annotations

import pytest
import yaml

from . import rendering
from .rendering import find, one


def deployment_spec(manifests):
    return one(manifests, "Deployment")["spec"]


def config_of(manifests):
    return yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])


@pytest.mark.parametrize(("value_set", "replicas"), [("default", 1), ("exactly-once", 3)])
def test_fixed_replicas_without_an_autoscaler(rendered, value_set, replicas):
    manifests = rendered[value_set]
    assert deployment_spec(manifests)["replicas"] == replicas
    assert not find(manifests, "ScaledObject") and not find(manifests, "HorizontalPodAutoscaler")


@pytest.mark.parametrize("value_set", ["keda", "hpa", "sasl-tls"])
def test_replicas_are_omitted_when_an_autoscaler_owns_them(rendered, value_set):
    assert "replicas" not in deployment_spec(rendered[value_set])


def test_keda_scales_on_the_lag_of_the_worker_group(rendered):
    manifests = rendered["keda"]
    scaled = one(manifests, "ScaledObject")["spec"]
    config = config_of(manifests)
    assert scaled["scaleTargetRef"]["name"] == one(manifests, "Deployment")["metadata"]["name"]
    assert scaled["minReplicaCount"] == 0
    assert scaled["maxReplicaCount"] == 12  # inputPartitions
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"] == {
        "bootstrapServers": config["kafka"]["bootstrap_servers"],
        "consumerGroup": config["kafka"]["group_id"],
        "topic": "comments",
        "lagThreshold": "500",
        "activationLagThreshold": "10",
        "offsetResetPolicy": "earliest",  # the worker's auto.offset.reset
        "allowIdleConsumers": "false",
    }
    assert "authenticationRef" not in trigger  # no credentials configured
    assert not find(manifests, "TriggerAuthentication")
    assert not find(manifests, "HorizontalPodAutoscaler")  # KEDA creates its own


def test_keda_max_replicas_default_to_the_input_partitions(helm_bin):
    scaled = one(rendering.render("default", {"autoscaling": {"mode": "keda"}}), "ScaledObject")["spec"]
    assert scaled["maxReplicaCount"] == 6
    scaled = one(rendering.render("default", {"autoscaling": {"mode": "keda", "maxReplicas": 4}}), "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 4


def test_keda_with_credentials_uses_a_trigger_authentication(rendered):
    manifests = rendered["sasl-tls"]
    (trigger,) = one(manifests, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"
    assert trigger["authenticationRef"] == {"name": one(manifests, "TriggerAuthentication")["metadata"]["name"]}
    # Only references: no credential value appears in the scaler's metadata.
    assert not {"username", "password", "ca", "cert", "key"} & set(trigger["metadata"])


@pytest.mark.parametrize(
    ("mechanism", "keda_sasl"),
    [("PLAIN", "plaintext"), ("SCRAM-SHA-256", "scram_sha256"), ("SCRAM-SHA-512", "scram_sha512")],
)
def test_keda_sasl_mode_matches_the_worker_mechanism(helm_bin, mechanism, keda_sasl):
    values = {
        "autoscaling": {"mode": "keda"},
        "kafkaAuth": {"sasl": {"mechanism": mechanism, "existingSecret": "kafka-user"}},
    }
    manifests = rendering.render("default", values)
    (trigger,) = one(manifests, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == keda_sasl
    assert "tls" not in trigger["metadata"]
    assert config_of(manifests)["kafka"]["sasl_mechanism"] == mechanism


def test_keda_sums_all_topics_of_the_group_when_there_are_several(helm_bin):
    manifests = rendering.render("exactly-once", {"autoscaling": {"mode": "keda"}})
    (trigger,) = one(manifests, "ScaledObject")["spec"]["triggers"]
    assert "topic" not in trigger["metadata"]
    assert trigger["metadata"]["offsetResetPolicy"] == "latest"  # the value set's auto.offset.reset


def test_hpa_is_the_alternative(rendered):
    manifests = rendered["hpa"]
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": one(manifests, "Deployment")["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert not find(manifests, "ScaledObject")


def test_rollouts_keep_old_pods_until_new_ones_are_ready(rendered):
    strategy = deployment_spec(rendered["default"])["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


@pytest.mark.parametrize("value_set", rendering.VALUE_SETS)
def test_disruption_budget_covers_the_pods(rendered, value_set):
    manifests = rendered[value_set]
    pdb = one(manifests, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
