"""Alembic environment: the same migrations for Postgres (asyncpg) and SQLite (aiosqlite)."""

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from app.core.db import Base
from app.core.settings import Settings
from app.domains.execution import models as _execution_models  # noqa: F401 - registers tables
from app.domains.governance import models as _governance_models  # noqa: F401
from app.domains.modes import models as _mode_models  # noqa: F401
from app.domains.policy import models as _policy_models  # noqa: F401
from app.domains.risk import models as _risk_models  # noqa: F401
from app.domains.safety import models as _safety_models  # noqa: F401
from app.domains.signals.registry import models as _registry_models  # noqa: F401
from app.domains.trading import models as _trading_models  # noqa: F401

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return (
        config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url") or Settings().database_url
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
