"""Keep credential values out of every report, export and listing drctl writes.

By design no secret enters a workflow's input, result or logs. This is the second line: should
one slip into a history anyway (an exception message quoting a URL with its token, say), the
value is replaced by ``[redacted]`` before anything leaves drctl. Which values count as secrets
is read from the topology: every field named ``*_env`` names an environment variable holding
one, wherever it sits in the model, so a credential added to the topology later is covered
without touching this file.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel
from temporalio.client import WorkflowHistory

REDACTED = "[redacted]"
# Shorter values ("1", "true", "lab") would redact ordinary words all over a report.
MIN_SECRET_LENGTH = 6
ENV_FIELD_SUFFIX = "_env"


def secret_env_names(model: BaseModel) -> list[str]:
    """Every environment variable name the model's ``*_env`` fields hold, nested or not."""
    return sorted(set(_env_names(model)))


def _env_names(value: Any) -> Iterator[str]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            field = getattr(value, name)
            if name.endswith(ENV_FIELD_SUFFIX) and isinstance(field, str):
                yield field
            else:
                yield from _env_names(field)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _env_names(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _env_names(item)


class SecretScrubber:
    """Replaces known secret values, also as they appear once escaped for JSON or HTML."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        forms = set(values)
        for value in values:
            forms |= {
                json.dumps(value)[1:-1],
                json.dumps(value, ensure_ascii=False)[1:-1],
                html.escape(value),
                html.escape(value, quote=False),
                html.escape(json.dumps(value)[1:-1]),
            }
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = sorted(forms, key=lambda f: (-len(f), f))
        self._raw = sorted(values, key=lambda v: (-len(v), v))

    @classmethod
    def for_topology(
        cls, topology: BaseModel, environ: Mapping[str, str] | None = None
    ) -> SecretScrubber:
        env = os.environ if environ is None else environ
        return cls(env[name] for name in secret_env_names(topology) if env.get(name))

    @property
    def active(self) -> bool:
        return bool(self._raw)

    def scrub(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            for value in self._raw:
                data = data.replace(value.encode(), REDACTED.encode())
            return data
        return self.scrub(text).encode()

    def scrub_history(self, history: WorkflowHistory) -> WorkflowHistory:
        """The same history with secrets removed from every payload and every string field.
        Payloads are base64 in a history's JSON, so a text search would miss them: each is
        decoded, scrubbed and encoded again."""
        if not self.active:
            return history
        document = self._scrub_json(history.to_json_dict())
        return WorkflowHistory.from_json(history.workflow_id, document)

    def _scrub_json(self, value: Any) -> Any:
        if isinstance(value, dict):
            if isinstance(value.get("data"), str) and isinstance(value.get("metadata"), dict):
                value = dict(value, data=self._scrub_base64(value["data"]))
                return {k: v if k == "data" else self._scrub_json(v) for k, v in value.items()}
            return {k: self._scrub_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub_json(item) for item in value]
        if isinstance(value, str):
            return self.scrub(value)
        return value

    def _scrub_base64(self, encoded: str) -> str:
        try:
            data = base64.b64decode(encoded, validate=True)
        except ValueError:
            return self.scrub(encoded)
        return base64.b64encode(self.scrub_bytes(data)).decode()
