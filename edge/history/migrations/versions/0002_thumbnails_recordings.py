"""Thumbnails every few seconds per stream, and recorded footage indexed with `cezsar index`
(resumable: each file's progress; its windows point at it).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "thumbnails",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.Integer, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("jpeg", sa.LargeBinary, nullable=False),
        sa.Column("recording_id", sa.Integer),
    )
    op.create_index("ix_thumbnails_stream_time", "thumbnails", ["stream_id", "time"])
    op.create_index("ix_thumbnails_time", "thumbnails", ["time"])
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("stream_id", sa.Integer, nullable=False),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("base_time", sa.Float, nullable=False),
        sa.Column("duration", sa.Float),
        sa.Column("indexed_until", sa.Float, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
    )
    # ADD COLUMN: SQLite adds it in place (no table copy), so a large file migrates in moments
    op.add_column("windows", sa.Column("recording_id", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("windows") as b:
        b.drop_column("recording_id")
    op.drop_table("recordings")
    op.drop_table("thumbnails")
