"""The labels file from a ConfigMap: mounted so that edits reach running pods, without rolling them."""

from __future__ import annotations

import pytest
import yaml

from worker.labels import load_labels_file

from . import rendering
from .rendering import HelmError, find, one, rendered_worker, worker_container

LABELS = {
    "fallback": "unsure",
    "labels": [{"name": "spam", "examples": ["buy now"], "threshold": 0.5}, {"name": "praise", "examples": ["thanks"]}],
}


def mounted_volume(manifests, path):
    """The mount above `path` in the worker container and the volume behind it."""
    deployment = one(manifests, "Deployment")
    container = worker_container(deployment)
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"nothing is mounted above {path}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    return mount, volume


def checksum(values):
    deployment = one(rendering.render("default", values), "Deployment")
    return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


@pytest.mark.parametrize("content", [yaml.safe_dump(LABELS), LABELS], ids=["text", "inline"])
def test_labels_content_is_a_file_of_the_chart_configmap_mounted_as_a_directory(helm_bin, tmp_path, content):
    worker = rendered_worker("default", {"labels": {"content": content}})
    path = worker.config["model"]["labels_file"]
    mount, volume = mounted_volume(worker.manifests, path)
    # subPath mounts never see ConfigMap updates; a directory mount gets the kubelet's swaps.
    assert "subPath" not in mount and mount["readOnly"] is True
    configmap = next(c for c in find(worker.manifests, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"])
    local = tmp_path / "labels.yaml"
    local.write_text(configmap["data"][path[len(mount["mountPath"]) + 1 :]])
    definition = load_labels_file(local)  # the worker's own loader accepts what the pod will read
    assert definition.names == ["spam", "praise"] and definition.fallback == "unsure"
    assert definition.labels[0].threshold == 0.5


def test_editing_the_labels_does_not_roll_the_pods(helm_bin):
    before = checksum({"labels": {"content": yaml.safe_dump(LABELS)}})
    edited = {**LABELS, "labels": [*LABELS["labels"], {"name": "shipping", "examples": ["where is my parcel"]}]}
    assert checksum({"labels": {"content": yaml.safe_dump(edited)}}) == before
    assert checksum({"labels": {"content": yaml.safe_dump(LABELS)}, "worker": {"model": {"labels_reload_s": 9}}}) != before


def test_an_existing_configmap_is_mounted_by_its_key(helm_bin):
    worker = rendered_worker("default", {"labels": {"existingConfigMap": "team-labels", "key": "moderation.yaml"}})
    path = worker.config["model"]["labels_file"]
    assert path.endswith("/moderation.yaml")
    mount, volume = mounted_volume(worker.manifests, path)
    assert "subPath" not in mount and mount["readOnly"] is True
    assert volume["configMap"] == {
        "name": "team-labels",
        "items": [{"key": "moderation.yaml", "path": "moderation.yaml"}],
    }
    assert all("labels.yaml" not in c["data"] for c in find(worker.manifests, "ConfigMap"))


def test_without_labels_the_worker_keeps_its_own_setting(helm_bin):
    assert rendered_worker("default").config["model"]["labels_file"] is None
    worker = rendered_worker("default", {"worker": {"model": {"labels_file": "/models/labels.yaml"}}})
    assert worker.config["model"]["labels_file"] == "/models/labels.yaml"


def test_labels_and_an_explicit_labels_file_are_refused_together(helm_bin):
    with pytest.raises(HelmError, match="worker.model.labels_file: leave it null"):
        rendering.render("default", {"labels": {"content": "labels: []"}, "worker": {"model": {"labels_file": "/x"}}})
