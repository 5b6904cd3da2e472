"""deploy/prometheus and deploy/grafana: promtool checks and unit tests of the rules, every alert
tested firing and quiet, dashboards current with their generator, every query on known metrics."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.promqueries import (
    ALERT_RULES,
    DASHBOARDS,
    METRICS,
    RECORDING_RULES,
    ROOT,
    dashboard_queries,
    metric_names,
    panels,
    queries,
    recording_queries,
    rules,
)

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
RULE_FILES = [RECORDING_RULES, ALERT_RULES]
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("promtool is required in CI (Debian package prometheus); it is not on PATH")
    pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus)")


def run_promtool(promtool: str, *args: str) -> None:
    result = subprocess.run([promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"


def test_promtool_check_config(promtool: str) -> None:
    run_promtool(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    run_promtool(promtool, "check", "rules", str(path))


def test_promtool_test_rules(promtool: str) -> None:
    assert RULE_TESTS
    run_promtool(promtool, "test", "rules", *map(str, RULE_TESTS))


def _alert_cases() -> dict[str, list[list]]:
    """Alert name -> the exp_alerts of every promtool case that evaluates it."""
    cases: dict[str, list[list]] = {}
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    return cases


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = _alert_cases()
    alerts = [rule["alert"] for rule in rules(ALERT_RULES) if "alert" in rule]
    assert len(alerts) == len(set(alerts))
    never_fire = sorted(name for name in alerts if not any(cases.get(name, [])))
    never_quiet = sorted(name for name in alerts if all(cases.get(name, [[]])))
    assert not never_fire, f"alerts without a promtool case that expects them to fire: {never_fire}"
    assert not never_quiet, f"alerts without a promtool case that expects them quiet: {never_quiet}"
    assert not set(cases) - set(alerts), f"tests of unknown alerts: {sorted(set(cases) - set(alerts))}"


def test_every_alert_has_severity_and_annotations() -> None:
    for rule in rules(ALERT_RULES):
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_every_recording_rule_is_tested() -> None:
    tested = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in group.get("promql_expr_test", []):
                tested |= metric_names(case["expr"])
    untested = sorted(q.record for q in recording_queries() if q.record not in tested)
    assert not untested, f"recording rules without a promql_expr_test: {untested}"


def test_queries_use_only_contract_metrics() -> None:
    recorded = {q.record for q in recording_queries()}
    exprs = [(q.source, q.expr) for q in queries(job_id="c1/1001")]
    exprs += [(f"alert {rule['alert']}", rule["expr"]) for rule in rules(ALERT_RULES) if "alert" in rule]
    unknown = {source: sorted(metric_names(expr) - METRICS - recorded) for source, expr in exprs}
    assert not {source: names for source, names in unknown.items() if names}
    assert all(metric_names(expr) for _, expr in exprs)


def test_every_panel_has_a_query() -> None:
    assert [path.name for path in DASHBOARDS] == ["gpuledger-cluster.json", "gpuledger-job.json"]
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text(encoding="utf-8"))):
            exprs = [target.get("expr", "").strip() for target in panel.get("targets", [])]
            assert exprs and all(exprs), f"{path.name}: panel {panel.get('title')!r} has a target without expr"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{path.name}: {panel['title']!r} has no unit"


def test_job_queries_select_the_job() -> None:
    job = [q for q in dashboard_queries(job_id="c1/1001") if q.source.startswith("gpuledger-job.json")]
    assert job and all('job_id="c1/1001"' in q.expr for q in job)
    assert not any("$" in q.expr for q in queries(job_id="c1/1001"))


def _generator():  # noqa: ANN202
    # pinned in pyproject.toml's test extra: the generated JSON depends on its version
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk is not installed (pip install -e '.[test]')")
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboards_are_generated() -> None:
    rendered = _generator().render()
    assert sorted(rendered) == [path.name for path in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text(encoding="utf-8") == rendered[path.name], (
            f"{path.name} differs from its generator: run python deploy/grafana/generate.py")
