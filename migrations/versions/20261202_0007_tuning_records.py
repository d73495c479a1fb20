"""tuning_workloads, tuning_records: MetaSchedule's tuning records per device class and target

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tuning_workloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("shash", sa.String(length=32), nullable=False),
        sa.Column("workload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_index("ix_tuning_workloads_shash", "tuning_workloads", ["shash"], unique=False)
    op.create_table(
        "tuning_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("device_class", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("software", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("run_s", sa.Float(), nullable=True),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workload_id"], ["tuning_workloads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "device_class", "target", "software", "workload_id", "sha256", name="uq_tuning_record"
        ),
    )
    op.create_index(
        "ix_tuning_records_class_target",
        "tuning_records",
        ["device_class", "target", "software"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_tuning_records_class_target", table_name="tuning_records")
    op.drop_table("tuning_records")
    op.drop_index("ix_tuning_workloads_shash", table_name="tuning_workloads")
    op.drop_table("tuning_workloads")
