"""Venue adapters, found by ``[[venues]] adapter = "..."`` in the topology.

Each adapter is one module here whose adapter class implements ``domain.venues.VenueAdapter``
and is built as ``Adapter(config, *, user_agent=...)`` from its own member of the
``VenueConfig`` union. Adding an adapter is one line in ``_ADAPTERS`` (plus its module, its line
in the contract suite ``tests/contract/test_venue_contract.py`` and docs/ADAPTERS.md).

Modules are imported only when a topology names them, so a worker needs only the client
libraries of the venues it actually reaches.
"""

from __future__ import annotations

import importlib
from typing import cast

from domain.topology import VenueConfig
from domain.venues import VenueAdapter, VenueCapability, VenueConfigError

DEFAULT_USER_AGENT = "failover-runbooks"

# adapter name -> "module:class". One line per adapter.
_ADAPTERS: dict[str, str] = {
    "lab": "adapters.venues.lab:LabVenueAdapter",
    "ccxt": "adapters.venues.ccxt:CcxtVenueAdapter",
    "fix44": "adapters.venues.fix44:Fix44Adapter",
}


def open_venue(config: VenueConfig, *, user_agent: str = DEFAULT_USER_AGENT) -> VenueAdapter:
    """The adapter for ``config.adapter``, not yet connected. Raises ``VenueConfigError`` when
    this worker has no such adapter or the config is unusable here (a credential unset)."""
    adapter = cast(VenueAdapter, _adapter_class(config)(config, user_agent=user_agent))
    # Every caller in this worker honours the venue's last Retry-After, not only the one told.
    from adapters.venues.pacing import PacedVenue

    return PacedVenue(adapter)


def declared_capabilities(config: VenueConfig) -> frozenset[VenueCapability]:
    """What the venue's adapter declares for ``config``, asked of the adapter class: no
    connection, no credential needed, so a plan can record it cheaply. An adapter whose
    capabilities follow its config (FIX: ``mass_status``, ``mass_cancel``) provides
    ``declared_capabilities(config)``; the others a class-level ``capabilities``."""
    adapter_class = _adapter_class(config)
    declare = getattr(adapter_class, "declared_capabilities", None)
    declared = (
        declare(config) if callable(declare) else getattr(adapter_class, "capabilities", None)
    )
    if not isinstance(declared, frozenset):
        raise VenueConfigError(
            config.name,
            f"adapter {config.adapter!r} declares no capabilities on its class "
            "(a frozenset `capabilities`, or `declared_capabilities(config)`)",
        )
    return frozenset(VenueCapability(c) for c in declared)


def _adapter_class(config: VenueConfig) -> type:
    target = _ADAPTERS.get(config.adapter)
    if target is None:
        raise VenueConfigError(
            config.name,
            f"adapter {config.adapter!r} is not available on this worker; "
            f"available: {', '.join(sorted(_ADAPTERS))}",
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise VenueConfigError(
            config.name,
            f"adapter {config.adapter!r} cannot be loaded on this worker ({exc}); "
            "install its client library",
        ) from None
    return cast(type, getattr(module, class_name))


def venue_adapters() -> list[str]:
    """The adapter names this build knows, for error messages and the contract suite."""
    return sorted(_ADAPTERS)
