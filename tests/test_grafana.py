"""deploy/grafana/nic-cache.json: every panel queries metrics a real cache exports on
/metrics (scraped after hits, misses and a pass-through), with prometheus_client's names."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from faas_accel.testbed.cache import Cache
from faas_accel.testbed.oci import skopeo_copy
from tests.conftest import LAB, Seeded, require

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "nic-cache.json"
# PromQL words that are not metric names: functions, aggregations, modifiers
PROMQL_WORDS = {
    "sum",
    "rate",
    "increase",
    "by",
    "without",
    "avg",
    "max",
    "min",
    "count",
    "on",
    "ignoring",
    "histogram_quantile",
    "irate",
    "label_values",
    "topk",
    "bottomk",
    "offset",
    "bool",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, ranges and functions removed)."""
    bare = _BRACES.sub(" ", _STRINGS.sub(" ", expr.replace("$__range", "1h")))
    return {w for w in _IDENT.findall(bare) if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]?", w)}


def exprs(dashboard: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(panel title, expression) of every target, and of the query variables."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield f"${var['name']}", var["definition"].replace("label_values(", "").split(",")[0]


def missing(dashboard: dict[str, Any], exported: set[str]) -> dict[str, set[str]]:
    """Panel -> the names it queries that the service does not export."""
    out = {}
    for title, expr in exprs(dashboard):
        names = metric_names(expr)
        if not names or names - exported:
            out[title] = names - exported or {"<no metric>"}
    return out


def scrape(url: str) -> set[str]:
    """Every sample name on a /metrics page (counters end in _total, as prometheus_client writes)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def exported(cache_factory: Callable[..., Cache], seeded: Seeded, tmp_path: Path) -> set[str]:
    """The names a cache exports after two pulls of an image too big for its capacity."""
    require("skopeo")
    cache = cache_factory(extra={"capacity": "1MiB"})  # multilayer's layers pass through
    for n in range(2):
        assert skopeo_copy(f"{cache.host}/{LAB}/lab/multilayer:1", tmp_path / str(n)).returncode == 0
    cache.wait_idle()
    return scrape(cache.url)


class TestDashboard:
    def test_every_panel_queries_exported_metrics(self, exported: set[str]) -> None:
        """No panel names a metric the cache does not export (e.g. a counter without _total)."""
        dashboard = json.loads(DASHBOARD.read_text())
        assert {"nic_cache_hits_total", "nic_cache_passthrough_total", "nic_cache_hit_ratio"} <= exported
        assert missing(dashboard, exported) == {}

    def test_a_wrong_name_is_caught(self) -> None:
        """The check fails on a counter named without its _total suffix."""
        dashboard = {
            "panels": [{"title": "x", "targets": [{"expr": 'sum(rate(nic_cache_hits{kind="blob"}[5m]))'}]}],
            "templating": {"list": []},
        }
        assert missing(dashboard, {"nic_cache_hits_total"}) == {"x": {"nic_cache_hits"}}

    @pytest.mark.parametrize(
        ("expr", "names"),
        [
            (
                'sum by (kind) (rate(nic_cache_hits_total{instance=~"$instance"}[5m]))',
                {"nic_cache_hits_total"},
            ),
            ("sum(increase(a_total[$__range])) - sum(increase(b_total[$__range]))", {"a_total", "b_total"}),
            ("nic_cache_hit_ratio", {"nic_cache_hit_ratio"}),
        ],
        ids=["labels-and-by", "range-variable", "bare"],
    )
    def test_metric_names(self, expr: str, names: set[str]) -> None:
        """Names are read from PromQL without labels, ranges, functions or grouping."""
        assert metric_names(expr) == names

    def test_panels_are_well_formed(self) -> None:
        """Unique panel ids, a Prometheus datasource variable, an instance filter on every query."""
        dashboard = json.loads(DASHBOARD.read_text())
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for title, expr in exprs(dashboard):
            assert title.startswith("$") or 'instance=~"$instance"' in expr, title
        assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dashboard["panels"])
