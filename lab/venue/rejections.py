"""The one way the venue says no: an HTTP status with an error body."""

from __future__ import annotations

from typing import Any

from lab.venue.models import ErrorBody


class VenueRejection(Exception):
    def __init__(
        self, status_code: int, body: ErrorBody, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body.error)
        self.status_code = status_code
        self.body = body
        self.headers = headers or {}

    def body_json(self) -> dict[str, Any]:
        return self.body.model_dump(mode="json")


def session_not_active() -> VenueRejection:
    return VenueRejection(409, ErrorBody(error="session not active; reconnect"))
