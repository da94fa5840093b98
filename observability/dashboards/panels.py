"""What the generated dashboards share: the two data sources (dashboard variables), a raw-SQL
target for Grafana's PostgreSQL data source (the SDK has no builder for it), a PromQL
target, and the time-series panel every dashboard uses."""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.builders import common, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement, SortOrder, TooltipDisplayMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef

POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid="${postgres}")
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${prometheus}")


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


def prom(expr: str, legend: str) -> PromQuery:
    return PromQuery().expr(expr).legend_format(legend).range().datasource(PROMETHEUS)


def legend() -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .show_legend(True)
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .calcs([])
    )


def tooltip() -> common.VizTooltipOptions:
    return common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)


def series(
    title: str, unit: str, query: cogbuilder.Builder[cogvariants.Dataquery], source: DataSourceRef, description: str
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(source)
        .with_target(query)
        .legend(legend())
        .tooltip(tooltip())
        .height(8)
        .span(12)
    )
