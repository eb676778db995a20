"""job positions: an index to count a tenant's queued jobs ahead of one

``GET /api/v1/jobs/{id}`` reports a queued job's ``queue_position``: how many of its tenant's
queued jobs were created before it. ``ix_jobs_tenant_queue`` (tenant, status, created_at, id)
makes that one range count over the jobs ahead, however many finished jobs the tenant keeps.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_tenant_queue", "jobs", ["tenant_id", "status", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_queue", table_name="jobs")
