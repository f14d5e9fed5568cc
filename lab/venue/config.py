"""How one simulated venue behaves: its timings and how often it fills."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from domain.topology import Name
from lab.topology_gen import SYMBOLS


class VenueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    # SecretStr keeps the key out of reprs, tracebacks and logs.
    api_key: SecretStr
    # Signs requests to the Binance-compatible face (its API key is ``api_key``). None: the
    # face refuses every signed request and says so.
    api_secret: SecretStr | None = None
    # What the Binance face lists in exchangeInfo (the lab REST API accepts any symbol).
    symbols: tuple[Annotated[str, Field(pattern=r"^[A-Z0-9]{1,20}$")], ...] = SYMBOLS
    reconnect_cooldown_s: Annotated[float, Field(ge=0)] = 3.0
    # The FIX 4.4 acceptor's port (lab/venue/fix_acceptor.py), beside the HTTP port; None: none.
    fix_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    session_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    fill_interval_s: Annotated[float, Field(gt=0)] = 0.5
    fill_probability: Annotated[float, Field(ge=0, le=1)] = 0.2
    seed: int | None = None
