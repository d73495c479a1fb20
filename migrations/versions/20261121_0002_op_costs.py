"""op_costs: per-device-class times for cost-guided partitioning

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "op_costs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_class", sa.String(length=128), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("software", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=96), nullable=False),
        sa.Column("median_ms", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "device_class", "variant", "software", "signature", name="uq_op_cost"
        ),
    )


def downgrade() -> None:
    op.drop_table("op_costs")
