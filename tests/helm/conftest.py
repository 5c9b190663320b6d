"""Fixtures for the chart's tests: the real helm binary, and each value set rendered once."""

from __future__ import annotations

from typing import Any

import pytest

from . import rendering


@pytest.fixture(scope="session")
def helm_bin():
    # Fail, never skip: a chart test that silently does not run proves nothing.
    try:
        return rendering.helm_binary()
    except Exception as exc:  # noqa: BLE001 - any way of not having helm is a failure
        pytest.fail(f"helm is needed for the chart tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def rendered(helm_bin) -> dict[str, list[dict[str, Any]]]:
    """Manifests of every value set, rendered once per session."""
    return {name: rendering.render(name) for name in rendering.VALUE_SETS}
