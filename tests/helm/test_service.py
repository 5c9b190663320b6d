"""The metrics Service, the optional ServiceMonitor and the ServiceAccount."""

from __future__ import annotations

import pytest

from . import rendering
from .rendering import find, one


@pytest.mark.parametrize("value_set", rendering.VALUE_SETS)
def test_service_exposes_the_metrics_port_of_the_pods(rendered, value_set):
    manifests = rendered[value_set]
    service = one(manifests, "Service")["spec"]
    pod = one(manifests, "Deployment")["spec"]["template"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["ports"]
    container_ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert port["name"] == "http-metrics"
    assert port["targetPort"] in container_ports


def test_service_monitor_is_off_by_default(rendered):
    assert not find(rendered["default"], "ServiceMonitor")


def test_service_monitor_scrapes_the_service(rendered):
    manifests = rendered["keda"]
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [rendering.NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_service_account_has_no_api_token(rendered):
    account = one(rendered["default"], "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


def test_existing_service_account_can_be_used(helm_bin):
    manifests = rendering.render("default", {"serviceAccount": {"create": False, "name": "workload-identity"}})
    assert not find(manifests, "ServiceAccount")
    assert one(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "workload-identity"
