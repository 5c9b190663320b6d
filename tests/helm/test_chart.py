"""The chart as a whole: lint, Kubernetes schemas, values and their schema, NOTES.txt."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from worker.settings import WorkerSettings

from . import rendering
from .rendering import CHART_DIR, VALUE_SETS, HelmError, find, one

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.25", kubernetes_validate.latest_version()]

# kubernetes-validate only knows built-in kinds. Custom resources are checked against small
# schemas of our own (tests/helm/crd_schemas), written from the CRDs' fields and closed to
# unknown keys, as the API server's strict field validation would be.
CRD_SCHEMAS = {
    (path.stem.split("-")[0], path.stem.split("-", 1)[1]): json.loads(path.read_text())
    for path in (Path(__file__).parent / "crd_schemas").glob("*.json")
}

# Worker settings the chart sets itself rather than through `worker:` values.
CHART_MANAGED = {
    "kafka": {
        "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file",
        "ssl_ca_location", "ssl_certificate_location", "ssl_key_location", "ssl_key_password",
    },
    "delivery": {"instance_id"},
}
# Worker defaults the chart deliberately changes.
CHART_DEFAULTS = {("kafka", "bootstrap_servers"): "kafka:9092"}

VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def _crd_key(manifest: dict[str, Any]) -> tuple[str, str]:
    group, _, version = manifest["apiVersion"].partition("/")
    return manifest["kind"].lower(), f"{group.split('.')[0]}-{version}"


def validate_manifest(manifest: dict[str, Any], version: str) -> None:
    key = _crd_key(manifest)
    if key in CRD_SCHEMAS:
        jsonschema.validate(manifest, CRD_SCHEMAS[key])
    else:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_passes(helm_bin, value_set):
    out = rendering.lint(value_set)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_manifests_are_valid_kubernetes_objects(rendered, value_set, version):
    manifests = rendered[value_set]
    assert manifests
    for manifest in manifests:
        try:
            validate_manifest(manifest, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{manifest['kind']} {manifest['metadata']['name']}: {where}: {exc.message}")


def test_every_custom_resource_has_a_schema(rendered):
    kinds = {_crd_key(m) for manifests in rendered.values() for m in manifests if "." in m["apiVersion"].split("/")[0]}
    assert kinds == set(CRD_SCHEMAS), "a custom resource kind without a schema in tests/helm/crd_schemas"


def test_custom_resource_schemas_reject_unknown_fields(rendered):
    scaled = one(rendered["keda"], "ScaledObject")
    validate_manifest(scaled, KUBERNETES_VERSIONS[-1])
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"][0]["metadta"] = {}
    with pytest.raises(jsonschema.ValidationError, match="metadta"):
        validate_manifest(broken, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("value_set", ["keda", "hpa"])
def test_scaling_behavior_is_a_valid_hpa_behavior(rendered, value_set):
    # KEDA passes `advanced.horizontalPodAutoscalerConfig.behavior` to the HPA it creates:
    # check it against the Kubernetes schema too.
    manifests = rendered[value_set]
    if value_set == "keda":
        behavior = one(manifests, "ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    else:
        behavior = one(manifests, "HorizontalPodAutoscaler")["spec"]["behavior"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "behavior"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2, "behavior": behavior},
    }
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_no_secret_is_rendered(rendered, value_set):
    # Credentials come from existing Secrets by name; the chart never creates or inlines one.
    manifests = rendered[value_set]
    assert not find(manifests, "Secret")
    for container in _all_containers(manifests):
        for entry in container.get("env", []):
            if re.search("PASSWORD|SECRET|TOKEN", entry["name"]):
                assert "secretKeyRef" in entry.get("valueFrom", {}), entry


def _all_containers(manifests):
    spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec["containers"] + spec.get("initContainers", [])


# Values and schema ---------------------------------------------------------------------------


def test_worker_values_mirror_the_worker_settings():
    fields = WorkerSettings.model_fields
    defaults = WorkerSettings().model_dump(mode="json")
    assert set(VALUES["worker"]) == set(fields)
    for section, values in VALUES["worker"].items():
        expected = set(defaults[section]) - CHART_MANAGED.get(section, set())
        assert set(values) == expected, f"worker.{section}"
        for name, value in values.items():
            default = CHART_DEFAULTS.get((section, name), defaults[section][name])
            assert value == default, f"worker.{section}.{name}: values.yaml {value!r}, worker {default!r}"


def _closed_objects(schema: dict[str, Any], values: Any, path: str = ""):
    """(path, schema property names, value keys) for every closed object the values fill in.

    Shared definitions ($ref: resources, probes, …) are types, not lists of values: skipped.
    """
    if "$ref" in schema:
        return
    if schema.get("additionalProperties") is False and isinstance(values, dict):
        yield path, set(schema["properties"]), set(values)
        for key, value in values.items():
            yield from _closed_objects(schema["properties"][key], value, f"{path}.{key}")


def test_values_and_schema_name_the_same_keys():
    for path, in_schema, in_values in _closed_objects(SCHEMA, VALUES):
        assert in_schema - {"global"} == in_values, path or "(top level)"


def undocumented_values(text: str) -> list[str]:
    """Keys with a value and no `# --` comment (helm-docs style) above them or above an ancestor.

    Plain `#` comments are prose about a section; they document nothing by themselves.
    """
    undocumented = []
    documented_indents: list[int] = []  # indents of documented keys whose blocks we are in
    comment_block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        if not stripped:
            comment_block = []
            continue
        indent = len(line) - len(line.lstrip())
        documented_indents = [i for i in documented_indents if i < indent]
        match = re.match(r"\s*([\w.\-/]+):(.*)$", line)
        if match and not stripped.startswith("-"):
            if any(comment.startswith("# --") for comment in comment_block):
                documented_indents.append(indent)
            elif match.group(2).strip() and not documented_indents:
                undocumented.append(stripped)
        comment_block = []
    return undocumented


def test_every_value_is_documented():
    text = (CHART_DIR / "values.yaml").read_text()
    assert not undocumented_values(text), "values without a `# --` comment"
    # The check itself: dropping one comment is noticed.
    assert undocumented_values(text.replace("    # -- Most events in one forward pass.\n", "")) == ["max_size: 64"]


def test_schema_is_a_valid_draft7_schema_and_accepts_the_defaults():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


BAD_VALUES = [
    pytest.param({"replicaCount": "3"}, ["at '/replicaCount': got string, want integer"], id="string-replicas"),
    pytest.param({"replicas": 3}, ["additional properties 'replicas' not allowed"], id="unknown-key"),
    pytest.param({"worker": {"batch": {"max_sise": 8}}}, ["at '/worker/batch'", "'max_sise' not allowed"],
                 id="unknown-worker-setting"),
    pytest.param({"worker": {"kafka": {"sasl_password": "hunter2"}}},
                 ["at '/worker/kafka'", "'sasl_password' not allowed"], id="inlined-password"),
    pytest.param({"worker": {"kafka": {"config": {"sasl.password": "hunter2"}}}},
                 ["invalid propertyName 'sasl.password'"], id="password-in-librdkafka-config"),
    pytest.param({"worker": {"delivery": {"mode": "twice"}}}, ["at '/worker/delivery/mode'"], id="bad-enum"),
    pytest.param({"worker": {"batch": {"max_size": 0}}}, ["at '/worker/batch/max_size'", "minimum"], id="zero-batch"),
    pytest.param({"gpu": {"enabled": "yes"}}, ["at '/gpu/enabled': got string, want boolean"], id="string-bool"),
    pytest.param({"autoscaling": {"mode": "keda", "maxReplicas": 10}},
                 ["autoscaling.maxReplicas (10) is above autoscaling.inputPartitions (6)"], id="max-above-partitions"),
    pytest.param({"kafkaAuth": {"sasl": {"mechanism": "PLAIN"}}}, ["kafkaAuth.sasl.existingSecret"],
                 id="sasl-without-secret"),
    pytest.param({"model": {"source": "pvc"}}, ["model.pvc.claimName"], id="pvc-without-claim"),
    pytest.param({"autoscaling": {"mode": "hpa", "minReplicas": 0}}, ["cannot scale to zero"], id="hpa-to-zero"),
    pytest.param({"extraEnv": [{"name": "WORKER_KAFKA__SASL_PASSWORD", "value": "hunter2"}]},
                 ["at '/extraEnv/0'"], id="literal-password-in-extra-env"),
    pytest.param({"terminationGracePeriodSeconds": 60},
                 ["must exceed worker.delivery.drain_timeout_s (60) by 15 s"], id="grace-shorter-than-drain"),
]


@pytest.mark.parametrize(("values", "messages"), BAD_VALUES)
def test_bad_values_fail_with_the_schema_message(helm_bin, values, messages):
    with pytest.raises(HelmError) as failure:
        rendering.render("default", values)
    for message in messages:
        assert message in str(failure.value)


# NOTES.txt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_notes_say_what_was_deployed_and_how_to_watch_it(helm_bin, value_set):
    notes = rendering.render_notes(value_set)
    assert f"Deployment {rendering.NAMESPACE}/{rendering.RELEASE}-encoder-worker" in notes
    assert f"kubectl -n {rendering.NAMESPACE} rollout status deployment/rel-encoder-worker" in notes
    assert "/metrics" in notes
    if value_set in ("keda", "sasl-tls"):
        assert "get scaledobject rel-encoder-worker" in notes
    if value_set == "hpa":
        assert "get hpa rel-encoder-worker" in notes
    if value_set == "gpu":
        assert "GPU (1 × nvidia.com/gpu per replica)" in notes
