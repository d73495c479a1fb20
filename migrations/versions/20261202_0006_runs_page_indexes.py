"""Indexes that bound the web pages' reads of runs: a device's newest runs
(ix_runs_device_recent on device_id, id, which also serves every lookup by device and so
replaces ix_runs_device_id) and the runs that ended within a window (ix_runs_finished_at)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_device_recent", ["device_id", "id"], unique=False)
        batch_op.create_index("ix_runs_finished_at", ["finished_at"], unique=False)
        batch_op.drop_index("ix_runs_device_id")


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_device_id", ["device_id"], unique=False)
        batch_op.drop_index("ix_runs_finished_at")
        batch_op.drop_index("ix_runs_device_recent")
