"""tunings, tuning_slices, devices.tuning_slice_id: tuning as a farm job

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tunings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("device_class", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("inputs", JSON, nullable=False),
        sa.Column("trials", sa.Integer(), nullable=True),
        sa.Column("minutes", sa.Float(), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "done",
                "failed",
                "cancelled",
                name="tuning_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("night_id", sa.Integer(), nullable=True),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.Column("report", JSON, nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("enqueued_at", WHEN, nullable=True),
        sa.Column("started_at", WHEN, nullable=True),
        sa.Column("heartbeat_at", WHEN, nullable=True),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["night_id"], ["nights.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tunings_model_id", "tunings", ["model_id"], unique=False)
    op.create_index("ix_tunings_status", "tunings", ["status"], unique=False)
    op.create_index("ix_tunings_night_id", "tunings", ["night_id"], unique=False)
    op.create_table(
        "tuning_slices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tuning_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "done",
                "declined",
                "failed",
                name="slice_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("plan", JSON, nullable=False),
        sa.Column("bundle", sa.LargeBinary(), nullable=True),
        sa.Column("results", JSON, nullable=False),
        sa.Column("cores", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("started_at", WHEN, nullable=True),
        sa.Column("heartbeat_at", WHEN, nullable=True),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.ForeignKeyConstraint(["tuning_id"], ["tunings.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tuning_slices_tuning_id", "tuning_slices", ["tuning_id"], unique=False)
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("tuning_slice_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("tuning_slice_id")
    op.drop_index("ix_tuning_slices_tuning_id", table_name="tuning_slices")
    op.drop_table("tuning_slices")
    op.drop_index("ix_tunings_night_id", table_name="tunings")
    op.drop_index("ix_tunings_status", table_name="tunings")
    op.drop_index("ix_tunings_model_id", table_name="tunings")
    op.drop_table("tunings")
