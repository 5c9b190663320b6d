"""Render the chart with the real `helm` binary and pick out what the worker is run with.

`rendered_worker()` is the entry point for tests that run the worker the way the chart
configures it: the container's command, its environment and the rendered config.yaml.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "encoder-worker"
VALUE_SETS_DIR = CHART_DIR / "ci"
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
GET_HELM = REPO_ROOT / ".ci" / "get-helm"
RELEASE = "rel"
NAMESPACE = "workers"

# Named value sets: "default" is values.yaml alone, the others are files in the chart's ci/.
VALUE_SETS = ["default"] + sorted(p.name.removesuffix("-values.yaml") for p in VALUE_SETS_DIR.glob("*-values.yaml"))


class HelmError(RuntimeError):
    """helm exited non-zero; the message is its stderr."""


def helm_binary() -> Path:
    """The pinned helm, fetched by .ci/get-helm when missing. Raises RuntimeError if it cannot be had."""
    if not HELM.is_file():
        result = subprocess.run(["bash", str(GET_HELM)], capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not HELM.is_file():
            raise RuntimeError(f"{GET_HELM.relative_to(REPO_ROOT)} could not provide helm:\n{result.stderr}")
    return HELM


def helm(*args: str) -> str:
    """Run helm; returns stdout, raises HelmError with stderr on failure."""
    result = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    return result.stdout


def _values_args(value_set: str, values: Mapping[str, Any] | None, tmp: Path) -> list[str]:
    args: list[str] = []
    if value_set != "default":
        path = VALUE_SETS_DIR / f"{value_set}-values.yaml"
        if not path.is_file():
            raise ValueError(f"no value set {value_set!r}; known: {VALUE_SETS}")
        args += ["-f", str(path)]
    if values:
        # A values file rather than --set keeps types (numbers, lists, maps) exact.
        extra = tmp / "extra-values.yaml"
        extra.write_text(yaml.safe_dump(dict(values)))
        args += ["-f", str(extra)]
    return args


def render_text(value_set: str = "default", values: Mapping[str, Any] | None = None) -> str:
    """`helm template` output for a value set, with `values` layered on top."""
    with tempfile.TemporaryDirectory() as tmp:
        return helm("template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE,
                    *_values_args(value_set, values, Path(tmp)))


def render(value_set: str = "default", values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The manifests `helm template` renders for a value set, parsed."""
    return [doc for doc in yaml.safe_load_all(render_text(value_set, values)) if doc]


def render_notes(value_set: str = "default", values: Mapping[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install` prints it (client-side dry run: no cluster needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = helm("install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--dry-run=client",
                   *_values_args(value_set, values, Path(tmp)))
    return out.split("NOTES:\n", 1)[1] if "NOTES:\n" in out else ""


def lint(value_set: str = "default") -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return helm("lint", "--strict", str(CHART_DIR), *_values_args(value_set, None, Path(tmp)))


def find(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = find(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class RenderedWorker:
    """What the chart runs: the worker container of the Deployment and its ConfigMap."""

    command: list[str]
    """The container's command followed by its args, e.g. `encoder-worker run --config …`."""
    env: list[dict[str, Any]]
    """The container's `env` list exactly as rendered (entries with `value` or `valueFrom`)."""
    config_yaml: str
    """The ConfigMap's config.yaml."""
    config_path: str
    """Where config.yaml is mounted in the pod (the path in `command`)."""
    manifests: list[dict[str, Any]]

    @property
    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_yaml)

    def local_command(self, config_file: str | Path) -> list[str]:
        """The command with the in-pod config path replaced by a local copy of config.yaml.

        The program is looked up beside this interpreter first: the console script is installed
        in the test environment, which need not be on PATH.
        """
        program, *args = self.command
        installed = Path(sys.executable).parent / program
        return [str(installed) if installed.exists() else program] + [
            str(config_file) if part == self.config_path else part for part in args
        ]

    def local_env(
        self,
        *,
        pod_name: str = f"{RELEASE}-encoder-worker-0",
        cpu_limit: str = "2",
        secrets: Mapping[tuple[str, str], str] | None = None,
    ) -> dict[str, str]:
        """The environment as the kubelet would resolve it on this machine.

        fieldRef metadata.name gives `pod_name`, resourceFieldRef limits.cpu gives `cpu_limit`,
        secretKeyRef looks up `secrets[(secret name, key)]`; anything else raises. Paths in it
        (HOME, HF_HOME) are the pod's: override them for a local run.
        """
        resolved: dict[str, str] = {}
        for entry in self.env:
            name = entry["name"]
            if "value" in entry:
                resolved[name] = str(entry["value"])
                continue
            source = entry.get("valueFrom", {})
            if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                resolved[name] = pod_name
            elif source.get("resourceFieldRef", {}).get("resource") == "limits.cpu":
                resolved[name] = cpu_limit
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                if secrets is None or (ref["name"], ref["key"]) not in secrets:
                    raise KeyError(f"env {name} needs Secret {ref['name']}/{ref['key']}: pass it in secrets")
                resolved[name] = secrets[(ref["name"], ref["key"])]
            else:
                raise ValueError(f"env {name}: cannot resolve {source} locally")
        return resolved


def worker_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def rendered_worker(value_set: str = "default", values: Mapping[str, Any] | None = None) -> RenderedWorker:
    """Render a value set (plus `values` on top) and return what the worker container runs.

    Example: run the worker against a local broker exactly as the chart configures it::

        rendered = rendered_worker("default", {"worker": {"kafka": {"bootstrap_servers": bootstrap}}})
        config_file.write_text(rendered.config_yaml)
        subprocess.Popen(rendered.local_command(config_file), env={**os.environ, **rendered.local_env()})
    """
    manifests = render(value_set, values)
    deployment = one(manifests, "Deployment")
    container = worker_container(deployment)
    command = [*container.get("command", []), *container.get("args", [])]
    config_path = next(part for part in command if part.endswith("/config.yaml"))
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    configmap = next(c for c in find(manifests, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"])
    key = config_path[len(mount["mountPath"]) + 1:]
    return RenderedWorker(
        command=command,
        env=list(container.get("env", [])),
        config_yaml=configmap["data"][key],
        config_path=config_path,
        manifests=manifests,
    )
