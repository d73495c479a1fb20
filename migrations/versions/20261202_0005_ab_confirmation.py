"""A/B confirmation of alerts: jobs.experiment, alerts.confirmation_status and
confirmation_job_id, nights.notified_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("experiment", JSON, nullable=True))
    with op.batch_alter_table("nights", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "confirmation_status",
                sa.Enum(
                    "pending",
                    "confirmed",
                    "rejected",
                    "unavailable",
                    name="confirmation_status",
                    native_enum=False,
                    length=16,
                ),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("confirmation_job_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_alerts_confirmation_status"), ["confirmation_status"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_alerts_confirmation_job",
            "jobs",
            ["confirmation_job_id"],
            ["id"],
            ondelete="SET NULL",
        )
    # Nights analysed before this revision had their alerts notified at once.
    op.execute("UPDATE nights SET notified_at = analysed_at WHERE analysed_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_alerts_confirmation_job", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_alerts_confirmation_status"))
        batch_op.drop_column("confirmation_job_id")
        batch_op.drop_column("confirmation_status")
    with op.batch_alter_table("nights", schema=None) as batch_op:
        batch_op.drop_column("notified_at")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("experiment")
