"""email_nfkc: stored emails in the NFKC form that login and registration now compare

Emails were lower-cased but not NFKC-normalised, so a fullwidth look-alike of an address
("ａｄｍｉｎ@example.com") was a separate account. Addresses are normalised in place. Where
two rows normalise to the same address the older keeps it and the look-alike is left
unchanged (it can no longer log in, since login input is normalised): a migration must not
merge accounts; an operator decides (the warning names the user ids).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

import logging
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

logger = logging.getLogger("ragd.db.migrate")


def upgrade() -> None:
    bind = op.get_bind()
    users = sa.table(
        "users", sa.column("id", sa.String), sa.column("email", sa.String),
        sa.column("created_at", sa.DateTime),
    )
    rows = bind.execute(
        sa.select(users.c.id, users.c.email).order_by(users.c.created_at, users.c.id)
    ).all()
    taken = {email for _, email in rows}
    for user_id, email in rows:
        canonical = unicodedata.normalize("NFKC", str(email)).strip().lower()
        if canonical == email:
            continue
        if canonical in taken:
            logger.warning(
                "email look-alike left unchanged",
                extra={"user_id": user_id, "collides_with": canonical.split("@", 1)[-1]},
            )
            continue
        bind.execute(users.update().where(users.c.id == user_id).values(email=canonical))
        taken.discard(email)
        taken.add(canonical)


def downgrade() -> None:
    """Nothing to undo: the normalised addresses are the same accounts."""
