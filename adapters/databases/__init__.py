"""Database adapters, found by ``[systems.database] adapter = "..."`` in the topology.

Each adapter is one module here whose class implements ``domain.database.DatabasePort`` and is
built as ``Adapter(config, env=None)`` from its member of the ``DatabaseConfig`` union (``env``:
where the DSN variables are read, ``os.environ`` by default). Adding an adapter is one line in
``_ADAPTERS``, its config model in ``domain/topology.py`` and one parameter in
``tests/contract/test_database_contract.py``. Modules are imported only when a topology names
them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import cast

from domain.database import DatabaseConfigError, DatabasePort
from domain.topology import DatabaseConfig

# adapter name -> "module:class". One line per adapter.
_ADAPTERS: dict[str, str] = {
    "postgres": "adapters.databases.postgres:PostgresDatabase",
}


def open_database(config: DatabaseConfig, env: Mapping[str, str] | None = None) -> DatabasePort:
    """The adapter for ``config.adapter``. Raises ``DatabaseConfigError`` when this worker has
    no such adapter or a DSN variable is unset or invalid (naming the variable)."""
    target = _ADAPTERS.get(config.adapter)
    if target is None:
        raise DatabaseConfigError(
            f"database adapter {config.adapter!r} is not available on this worker; "
            f"available: {', '.join(sorted(_ADAPTERS))}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DatabaseConfigError(
            f"database adapter {config.adapter!r} cannot be loaded on this worker ({exc}); "
            "install its client library"
        ) from None
    return cast(DatabasePort, getattr(module, class_name)(config, env=env))


def database_adapters() -> list[str]:
    """The adapter names this build knows, for error messages and the contract suite."""
    return sorted(_ADAPTERS)
