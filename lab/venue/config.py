"""How one simulated venue behaves: its timings and how often it fills."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from domain.topology import Name


class VenueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    # SecretStr keeps the key out of reprs, tracebacks and logs.
    api_key: SecretStr
    reconnect_cooldown_s: Annotated[float, Field(ge=0)] = 3.0
    session_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    fill_interval_s: Annotated[float, Field(gt=0)] = 0.5
    fill_probability: Annotated[float, Field(ge=0, le=1)] = 0.2
    seed: int | None = None
