"""tunings.threads: TVM's thread pool while a tuning's candidates are timed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 0: the runtime's default, which is what every tuning before this column measured with.
    op.add_column(
        "tunings", sa.Column("threads", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("tunings", "threads")
