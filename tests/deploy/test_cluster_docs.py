"""docs/cluster.md and docs/deploy.md stay true to the chart: the values they name exist, and the
Secret keys, daily-run containers and alerts they describe are the ones the chart renders."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support.env import REPO
from tests.support.tools import CHART, Rendered, containers

pytestmark = pytest.mark.deploy

DOCS = {name: REPO / "docs" / name for name in ("cluster.md", "deploy.md")}
TOP_LEVEL = yaml.safe_load((CHART / "values.yaml").read_text())
SUBCHARTS = {"redis": yaml.safe_load((CHART / "charts" / "redis" / "values.yaml").read_text())}


def _resolve(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("doc", list(DOCS))
def test_documented_values_exist(doc: str) -> None:
    text = DOCS[doc].read_text()
    blocks = "|".join(sorted(k for k, v in TOP_LEVEL.items() if isinstance(v, dict)))
    named = {m.rstrip(".") for m in re.findall(rf"`((?:{blocks})\.[A-Za-z0-9_.]+)", text)}
    assert named, f"{doc} names no values"
    unknown = []
    for dotted in sorted(named):
        top, _, rest = dotted.partition(".")
        ok = _resolve(TOP_LEVEL, dotted) or (top in SUBCHARTS and _resolve(SUBCHARTS[top], rest))
        if not ok and top == "config":
            ok = rest.startswith("CHURN_")  # free-form CHURN_* settings
        if not ok:
            unknown.append(dotted)
    assert not unknown, f"{doc} names values the chart does not have: {unknown}"


def test_secret_keys_are_documented(rendered: dict[str, Rendered]) -> None:
    keys = set()
    for case in ("default", "staging", "production"):
        for _obj, pod in rendered[case].workloads():
            for c in containers(pod):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        keys.add(ref["key"])
    text = DOCS["cluster.md"].read_text()
    table = text[text.index("## 2. Namespace and Secret") : text.index("## 3.")]
    assert keys and all(f"`{k}`" in table for k in keys), keys - set(re.findall(r"`(\w+)`", table))


def test_daily_run_and_alerts_are_documented(rendered: dict[str, Rendered]) -> None:
    text = DOCS["cluster.md"].read_text()
    (cj,) = rendered["default"].of_kind("CronJob")
    assert f"`{cj['metadata']['name']}`" in text
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for c in containers(pod):
        assert f"`{c['name']}`" in text, c["name"]
        assert " ".join([*c["command"], *c["args"]]) in text, c["args"]
    groups = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"]
    (daily,) = [g for g in groups if g["name"] == "churn-platform.daily"]
    for rule in daily["rules"]:
        assert f"`{rule['alert']}`" in text, rule["alert"]
    assert "Argo Workflows" in text and "ReadWriteMany" in text
