"""The history's index covers what a long series' points read: ix_results_history on
(model_id, device_id, backend, created_at) becomes ix_results_points on those and id,
median_ms, p90_ms, status, job_id, so a series of tens of thousands of runs, aggregated per
day, is read from the index alone (no row of the table visited); it serves every lookup the
old one did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 11:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POINT_COLUMNS = [
    "model_id",
    "device_id",
    "backend",
    "created_at",
    "id",
    "median_ms",
    "p90_ms",
    "status",
    "job_id",
]


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.create_index("ix_results_points", POINT_COLUMNS, unique=False)
        batch_op.drop_index("ix_results_history")


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.create_index(
            "ix_results_history", ["model_id", "device_id", "backend", "created_at"], unique=False
        )
        batch_op.drop_index("ix_results_points")
