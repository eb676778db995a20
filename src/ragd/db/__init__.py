"""Database layer: engine, tables, migrations and the SQL repositories' plumbing."""

from ragd.db.engine import Database

__all__ = ["Database"]
