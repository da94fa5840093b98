"""The alert rules (observability/prometheus/rules.yml) are valid and each one has a
unit test file that passes (``promtool check rules`` / ``promtool test rules``; promtool
comes with the Debian prometheus package, installed by ``make install``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "observability" / "prometheus"
RULES = RULES_DIR / "rules.yml"
TESTS = sorted((RULES_DIR / "tests").glob("*.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: run `make install` (scripts/infra.sh installs Debian's prometheus)"
    return path


def test_rules_are_valid() -> None:
    check = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_rule_has_a_passing_unit_test() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tested: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):  # a test that expects the alert to fire, not only silence
                    tested.add(check["alertname"])
    assert alerts == tested, f"alerts without a firing unit test: {alerts - tested}"
    run = subprocess.run(
        [promtool(), "test", "rules", *[p.name for p in TESTS]],
        cwd=RULES_DIR / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("SUCCESS") == len(TESTS), run.stdout
