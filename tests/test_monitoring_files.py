"""The alerting rules and the Grafana dashboard in monitoring/: valid, and every metric they
read is one the service or ``riskmodel monitor --prometheus`` writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from serving.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "monitoring" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboard.json"
TEXTFILE_WRITER = ROOT / "training" / "monitor.py"

# What Grafana needs to import a dashboard and draw its panels from Prometheus.
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 16},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos", "targets"],
                "properties": {
                    "id": {"type": "integer"},
                    "type": {"enum": ["timeseries", "stat", "bargauge", "gauge", "table"]},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": {
                        "type": "object",
                        "required": ["x", "y", "w", "h"],
                        "properties": {k: {"type": "integer"} for k in "xywh"},
                    },
                    "targets": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["refId", "expr"],
                            "properties": {
                                "refId": {"type": "string"},
                                "expr": {"type": "string", "minLength": 1},
                            },
                        },
                    },
                },
            },
        },
    },
}

_METRIC = re.compile(r"\briskmodel_[a-z0-9_]+\b")


def _exposed() -> set[str]:
    """Every series name the service exposes and the drift textfile holds."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in Metrics().registry.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    names |= set(re.findall(r'Gauge\(\s*"(riskmodel_[a-z0-9_]+)"', TEXTFILE_WRITER.read_text()))
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not on PATH: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_what_grafana_imports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    jsonschema.validate(dashboard, DASHBOARD_SCHEMA)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_rules_alert_on_what_the_issue_asks() -> None:
    exprs = "\n".join(_rule_exprs())
    for needed in (
        "riskmodel_store_up == 0",
        "riskmodel_model_loaded == 0",
        "riskmodel_policy_loaded == 0",
        'degraded="true"',
        "riskmodel_decision_seconds_bucket",
        "riskmodel_score_psi > 0.25",
        "riskmodel_feature_psi > 0.25",
        'decision="review"',
        "riskmodel_refused_total",
    ):
        assert needed in exprs, needed


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_read_is_one_that_is_written(source: str) -> None:
    exprs = _rule_exprs() if source == "rules" else _dashboard_exprs()
    used = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert used
    assert used <= _exposed(), used - _exposed()
