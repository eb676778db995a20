"""rate_limits: login throttling shared by every process (GCRA: one timestamp per key)

With several server processes or replicas, an in-memory limiter per process gives an attacker
N times the attempts. The limiter's state, one "theoretical arrival time" per key, lives here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(400), primary_key=True),
        # seconds since the epoch (float): the bucket's theoretical arrival time
        sa.Column("tat", sa.Float(), nullable=False),
    )
    op.create_index("ix_rate_limits_tat", "rate_limits", ["tat"])


def downgrade() -> None:
    op.drop_index("ix_rate_limits_tat", table_name="rate_limits")
    op.drop_table("rate_limits")
