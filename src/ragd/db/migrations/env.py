"""Alembic environment: runs on a connection handed in by ``ragd.db.migrate``."""

from alembic import context

from ragd.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("ragd migrations run through `ragd db upgrade` or at server start")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
