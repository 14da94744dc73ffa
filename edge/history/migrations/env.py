"""Alembic's environment: the store hands over its open connection (``config.attributes``)."""

from alembic import context

from edge.history.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
