"""Stations: site, gates, a status change time; commands may be rejected and keep a result.

Revision ID: 0005_stations
Revises: 0004_recording
Create Date: 2026-12-03

``stations`` (from 0001) gains ``site``, ``gates``, ``changed_at`` (when ``online`` last
changed, from the fact) and ``last_event_id``. ``station_commands`` gains ``rejected`` as a
status (streams refused the request: unknown station, gate or camera, station offline),
the agent's ``result`` and when it acknowledged; its foreign key to ``stations`` goes (the
two are projected from different topics, so a command's row may come first). Both
tables are projected from ``station.events`` and ``station.commands``
(streams/stations_projection.py). Hand-written; names follow db.models.NAMING_CONVENTION.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005_stations"
down_revision: str | Sequence[str] | None = "0004_recording"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.TIMESTAMP(timezone=True)
OLD_STATUSES = "status IN ('pending', 'acked', 'succeeded', 'failed', 'timed_out')"
NEW_STATUSES = "status IN ('pending', 'acked', 'succeeded', 'failed', 'timed_out', 'rejected')"


def upgrade() -> None:
    op.add_column("stations", sa.Column("site", sa.Text(), server_default="", nullable=False))
    op.add_column("stations", sa.Column("gates", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False))
    op.add_column("stations", sa.Column("changed_at", TIMESTAMPTZ, nullable=True))
    op.add_column("stations", sa.Column("last_event_id", sa.Text(), nullable=True))
    op.create_index(op.f("ix_stations_online"), "stations", ["online"])
    op.drop_constraint(op.f("fk_station_commands_station_id_stations"), "station_commands", type_="foreignkey")
    op.drop_constraint(op.f("ck_station_commands_status"), "station_commands", type_="check")
    op.create_check_constraint(op.f("ck_station_commands_status"), "station_commands", NEW_STATUSES)
    op.add_column(
        "station_commands", sa.Column("result", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False)
    )
    op.add_column("station_commands", sa.Column("acked_at", TIMESTAMPTZ, nullable=True))


def downgrade() -> None:
    op.drop_column("station_commands", "acked_at")
    op.drop_column("station_commands", "result")
    op.execute("DELETE FROM station_commands WHERE status = 'rejected'")
    op.drop_constraint(op.f("ck_station_commands_status"), "station_commands", type_="check")
    op.create_check_constraint(op.f("ck_station_commands_status"), "station_commands", OLD_STATUSES)
    op.execute(
        "DELETE FROM station_commands c WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = c.station_id)"
    )
    op.create_foreign_key(
        op.f("fk_station_commands_station_id_stations"),
        "station_commands",
        "stations",
        ["station_id"],
        ["station_id"],
        ondelete="CASCADE",
    )
    op.drop_index(op.f("ix_stations_online"), table_name="stations")
    for column in ("last_event_id", "changed_at", "gates", "site"):
        op.drop_column("stations", column)
