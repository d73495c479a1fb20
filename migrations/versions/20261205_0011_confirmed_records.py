"""tuning_records.confirmed_s: a record's time when its workload's best were timed again side
by side (harness.tuning.confirm)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: never confirmed, which is every record before this column (builds then choose by
    # the search's own measurement, as they did).
    op.add_column("tuning_records", sa.Column("confirmed_s", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("tuning_records", "confirmed_s")
