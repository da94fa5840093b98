"""The Grafana quality dashboard, built with Grafana's own Python builder
(``grafana-foundation-sdk``); ``python -m observability.dashboards`` writes it to
``observability/dashboards/quality.json``.

Two data sources, chosen by dashboard variables:

- ``$postgres`` (Grafana's PostgreSQL data source on the roomlog database): one room
  (``$room``) over time from ``quality_stats`` (10 s buckets per peer and leg: loss, RTT,
  bitrate) and ``quality_decisions`` (every layer, pause and resume decision).
- ``$prometheus`` (the Prometheus that scrapes the services, ``scripts/infra.sh``):
  node-level forwarded packets/s and subscriber loss (``roomlog_media_subscriber_loss_ratio``),
  and the quality agent's and projection's throughput.

SQL uses the PostgreSQL plugin's ``$__timeFilter(column)`` macro and ``'$room'``; PromQL
uses ``$__rate_interval``. tests/integration/test_quality_dashboard.py runs every query
against the real servers after a run.
"""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.builders import common, dashboard, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    ValueMap,
    ValueMapping,
    ValueMappingResult,
    VariableRefresh,
)

UID = "roomlog-quality"
POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid="${postgres}")
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${prometheus}")
#: the layer panel's numbers (numeric so the SQL long format becomes one series per leg)
LAYER_NAMES: list[ValueMapping] = [
    ValueMap(
        {
            "0": ValueMappingResult(text="paused", color="red", index=0),
            "1": ValueMappingResult(text="low", color="orange", index=1),
            "2": ValueMappingResult(text="mid", color="yellow", index=2),
            "3": ValueMappingResult(text="high", color="green", index=3),
        }
    )
]


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL data source (the SDK has no builder for it)."""

    def __init__(self, ref_id: str, raw_sql: str, format_: Literal["time_series", "table"]) -> None:
        self.ref_id, self.raw_sql, self.format = ref_id, raw_sql, format_

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid},
            "editorMode": "code",
            "rawQuery": True,
            "format": self.format,
            "rawSql": self.raw_sql,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(
        self, raw_sql: str, format_: Literal["time_series", "table"] = "time_series", ref_id: str = "A"
    ) -> None:
        self._query = SqlQuery(ref_id, " ".join(raw_sql.split()), format_)

    def build(self) -> SqlQuery:
        return self._query


def _leg_series(column: str, alias: str, legs: str) -> Sql:
    """One series per peer and leg of ``$room``: ``column`` per 10 s bucket."""
    return Sql(f"""
        SELECT sampled_at AS "time", peer_id || ' ' || leg AS metric, {column} AS "{alias}"
        FROM quality_stats
        WHERE room_id = '$room' AND source = 'node' AND leg LIKE '{legs}' AND $__timeFilter(sampled_at)
        ORDER BY 1, 2""")


def _prom(expr: str, legend: str) -> PromQuery:
    return PromQuery().expr(expr).legend_format(legend).range().datasource(PROMETHEUS)


def _legend() -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .show_legend(True)
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .calcs([])
    )


def _tooltip() -> common.VizTooltipOptions:
    return common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)


def _series(
    title: str, unit: str, query: cogbuilder.Builder[cogvariants.Dataquery], source: DataSourceRef, description: str
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(source)
        .with_target(query)
        .legend(_legend())
        .tooltip(_tooltip())
        .height(8)
        .span(12)
    )


def build() -> DashboardModel:
    room = (
        dashboard.QueryVariable("room")
        .label("Room")
        .datasource(POSTGRES)
        .query("SELECT room_id FROM rooms ORDER BY created_at DESC LIMIT 500")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    rate = "$__rate_interval"
    builder = (
        dashboard.Dashboard("roomlog: quality")
        .uid(UID)
        .tags(["roomlog", "quality"])
        .time("now-1h", "now")
        .refresh("10s")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .description(
            "Per-room quality history (Postgres: quality_stats, quality_decisions) and node-level "
            "forwarding and loss (Prometheus). Generated by observability/dashboards/quality.py."
        )
        .with_variable(
            dashboard.DatasourceVariable("postgres").label("PostgreSQL").type("grafana-postgresql-datasource")
        )
        .with_variable(dashboard.DatasourceVariable("prometheus").label("Prometheus").type("prometheus"))
        .with_variable(room)
        .with_row(dashboard.Row("Room $room (Postgres)"))
        .with_panel(
            _series(
                "Subscriber loss (%)",
                "percent",
                _leg_series("loss_pct::float8", "loss", "sub/%"),
                POSTGRES,
                "Mean loss per 10 s of each subscriber's copy of each source",
            )
        )
        .with_panel(
            _series(
                "Subscriber RTT (ms)",
                "ms",
                _leg_series("rtt_ms", "rtt", "sub/%"),
                POSTGRES,
                "Mean round-trip time per 10 s, from the subscribers' receiver reports",
            )
        )
        .with_panel(
            _series(
                "Bitrate sent to subscribers (kbit/s)",
                "Kbits",
                _leg_series("bitrate_kbps", "kbit/s", "sub/%"),
                POSTGRES,
                "Mean bitrate per 10 s the node forwards to each subscriber",
            )
        )
        .with_panel(
            _series(
                "Bitrate received from publishers (kbit/s)",
                "Kbits",
                _leg_series("bitrate_kbps", "kbit/s", "pub/%"),
                POSTGRES,
                "Mean bitrate per 10 s of each published encoding as the node receives it",
            )
        )
        .with_panel(
            statetimeline.Panel()
            .title("Layer forwarded to each subscriber")
            .datasource(POSTGRES)
            .description("The last layer of each 10 s bucket of each subscriber leg")
            .with_target(
                Sql("""
                        SELECT sampled_at AS "time", peer_id || ' ' || leg AS metric,
                               CASE layer WHEN 'paused' THEN 0 WHEN 'low' THEN 1 WHEN 'mid' THEN 2
                                          WHEN 'high' THEN 3 END AS layer
                        FROM quality_stats
                        WHERE room_id = '$room' AND source = 'node' AND leg LIKE 'sub/%' AND layer IS NOT NULL
                          AND $__timeFilter(sampled_at)
                        ORDER BY 1, 2""")
            )
            .mappings(LAYER_NAMES)
            .show_value(VisibilityMode.AUTO)
            .merge_values(True)
            .legend(_legend())
            .tooltip(_tooltip())
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Layer decisions")
            .datasource(POSTGRES)
            .description("Every QualityDecided fact of the room: who, which source, from/to, why")
            .with_target(
                Sql(
                    """
                        SELECT decided_at AS "time", peer_id, source_id, publisher_peer_id, previous, layer,
                               reason, loss_pct, level, bandwidth_kbps
                        FROM quality_decisions
                        WHERE room_id = '$room' AND $__timeFilter(decided_at)
                        ORDER BY decided_at DESC, event_id""",
                    "table",
                )
            )
            .show_header(True)
            .height(8)
            .span(24)
        )
        .with_row(dashboard.Row("Nodes and streams (Prometheus)"))
        .with_panel(
            _series(
                "Forwarded packets/s per node",
                "pps",
                _prom(
                    f"sum by (instance, kind) (rate(roomlog_media_node_forwarded_packets_total[{rate}]))",
                    "{{instance}} {{kind}}",
                ),
                PROMETHEUS,
                "RTP packets the media nodes forward, by kind",
            )
        )
        .with_panel(
            _series(
                "Subscriber video loss p95 per node",
                "percentunit",
                _prom(
                    f"histogram_quantile(0.95, sum by (instance, le) "
                    f"(rate(roomlog_media_subscriber_loss_ratio_bucket[{rate}])))",
                    "{{instance}} p95",
                ),
                PROMETHEUS,
                "95th percentile of per-sample loss of subscriber video legs",
            )
        )
        .with_panel(
            _series(
                "Subscriber video loss (mean) per node",
                "percentunit",
                _prom(
                    f"sum by (instance) (rate(roomlog_media_subscriber_loss_ratio_sum[{rate}])) / "
                    f"sum by (instance) (rate(roomlog_media_subscriber_loss_ratio_count[{rate}]))",
                    "{{instance}} mean",
                ),
                PROMETHEUS,
                "Mean per-sample loss of subscriber video legs",
            )
        )
        .with_panel(
            _series(
                "Quality history written to Postgres",
                "ops",
                _prom(
                    f"sum by (instance, kind) (rate(roomlog_streams_quality_projected_total[{rate}]))",
                    "{{instance}} {{kind}}/s",
                ),
                PROMETHEUS,
                "Samples and decisions each streams worker writes per second",
            )
        )
    )
    model = builder.build()
    for number, panel in enumerate(model.panels or [], start=1):  # Grafana wants unique panel ids
        panel.id_val = number
    return model
