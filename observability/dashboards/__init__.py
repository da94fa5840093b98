"""Grafana dashboards generated from code (``python -m observability.dashboards``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from observability.dashboards import overview, quality

HERE = Path(__file__).resolve().parent

#: file name → builder
DASHBOARDS: dict[str, Callable[[], object]] = {"quality.json": quality.build, "overview.json": overview.build}


def render(name: str) -> str:
    """The JSON of one dashboard, as committed (stable key order, trailing newline)."""
    return json.dumps(DASHBOARDS[name](), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
