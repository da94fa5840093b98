"""The committed Grafana dashboards are exactly what their generators write, and their
queries are the ones the integration test runs (tests/integration/test_quality_dashboard.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from observability.dashboards import DASHBOARDS, HERE, render
from tests.harness import REPO


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    for name in DASHBOARDS:
        assert (HERE / name).read_text() == render(name), f"{name} is stale: run python -m observability.dashboards"
    check = subprocess.run(
        [sys.executable, "-m", "observability.dashboards", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_quality_dashboard_shape() -> None:
    board = json.loads(render("quality.json"))
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])  # unique ids
    sql = [t["rawSql"] for p in panels for t in p["targets"] if "rawSql" in t]
    promql = [t["expr"] for p in panels for t in p["targets"] if "expr" in t]
    assert len(sql) == 6 and len(promql) == 4
    assert all("'$room'" in q and "$__timeFilter(" in q for q in sql)
    assert {p["datasource"]["uid"] for p in panels} == {"${postgres}", "${prometheus}"}
    assert [v["name"] for v in board["templating"]["list"]] == ["postgres", "prometheus", "room"]


def test_overview_dashboard_shape() -> None:
    board = json.loads(render("overview.json"))
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    assert all(len(p["targets"]) == 1 for p in panels)  # one query per panel: each is tested alone
    promql = [t["expr"] for p in panels for t in p["targets"] if "expr" in t]
    sql = [t["rawSql"] for p in panels for t in p["targets"] if "rawSql" in t]
    assert len(promql) == 20 and len(sql) == 3
    assert all("by (instance" in q for q in promql)  # the test keeps its own services' series
    assert [v["name"] for v in board["templating"]["list"]] == ["postgres", "prometheus"]
