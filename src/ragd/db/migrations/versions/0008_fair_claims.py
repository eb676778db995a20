"""fair_claims: what the job queue needs to share its workers fairly between tenants

``SqlJobQueue.claim`` used to take the oldest due job of all, so one tenant's backlog of
thousands of documents delayed every other tenant's upload until it had drained. A claim now
prefers the tenant with the fewest running jobs, then the one served least recently
(``ragd.jobs.queue``). This adds:

* ``jobs.claimed_at``: when a worker last took the job (existing jobs: none, as if their
  tenants had not been served for a long time);
* ``ix_jobs_queue (status, tenant_id, created_at, id)``: the tenants that have queued jobs,
  found one index step per tenant however long their backlogs are (the queued jobs lie
  together, by tenant, in creation order), each tenant's oldest queued job, the jobs it
  has running, and a queued job's ``queue_position`` (its tenant's queued jobs before it);
* ``ix_jobs_tenant_claimed (tenant_id, claimed_at)``: when each tenant was last served.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claimed_at", sa.DateTime(), nullable=True))
    op.create_index("ix_jobs_queue", "jobs", ["status", "tenant_id", "created_at", "id"])
    op.create_index("ix_jobs_tenant_claimed", "jobs", ["tenant_id", "claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_claimed", table_name="jobs")
    op.drop_index("ix_jobs_queue", table_name="jobs")
    op.drop_column("jobs", "claimed_at")
