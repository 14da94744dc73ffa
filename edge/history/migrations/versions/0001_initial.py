"""The first history schema: models, streams, scorings, windows, events and their phases.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cezsar_history",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hash", sa.String(128), nullable=False, unique=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "streams",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(160), nullable=False, unique=True),
    )
    op.create_table(
        "scorings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("actions", sa.Text, nullable=False),
        sa.Column("names", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "windows",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.Integer, nullable=False),
        sa.Column("zone", sa.String(64)),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("scoring_id", sa.Integer),
        sa.Column("scores", sa.LargeBinary),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_windows_time", "windows", ["time"])
    op.create_index("ix_windows_stream_time", "windows", ["stream_id", "time"])
    op.create_table(
        "events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("stream_id", sa.Integer, nullable=False),
        sa.Column("zone", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("model_id", sa.Integer),
        sa.Column("actions_version", sa.Integer),
        sa.Column("host", sa.String(255)),
        sa.Column("instance", sa.String(64)),
        sa.Column("clock", sa.String(16)),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float),
        sa.Column("time_start", sa.Float, nullable=False),
        sa.Column("time_end", sa.Float),
        sa.Column("peak", sa.Float, nullable=False),
        sa.Column("peak_time", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("snapshot", sa.Text),
        sa.Column("clip", sa.Text),
        sa.Column("media_written", sa.Boolean),
    )
    op.create_index("ix_events_time", "events", ["time_start"])
    op.create_index("ix_events_stream_time", "events", ["stream_id", "time_start"])
    op.create_table(
        "event_phases",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("peak", sa.Float, nullable=False),
    )
    op.create_index("ix_event_phases_event", "event_phases", ["event_id"])


def downgrade() -> None:
    for name in ("event_phases", "events", "windows", "scorings", "streams", "models", "cezsar_history"):
        op.drop_table(name)
