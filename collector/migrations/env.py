"""Alembic environment: runs on the connection that ``collector.schema`` hands it."""

from alembic import context
from sqlmodel import SQLModel

from collector import models, tokens  # noqa: F401 - registers the tables
from collector.partitions import include_name

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
    include_name=include_name,  # the day partitions are not in the models
)
with context.begin_transaction():
    context.run_migrations()
