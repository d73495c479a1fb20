"""tunings.population: the evolutionary search's population, per farm tuning

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 64: harness.tuning.DEFAULT_POPULATION, what every farm tuning before this column used.
    op.add_column(
        "tunings", sa.Column("population", sa.Integer(), nullable=False, server_default="64")
    )


def downgrade() -> None:
    op.drop_column("tunings", "population")
