"""REST requests and responses as plain values, so carrier modules that build and read them
stay sans-IO (no httpx, no trio); ``rest.RestClient`` is the shell that sends them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec


@dataclass(frozen=True, slots=True)
class RestRequest:
    method: str
    path: str  # joined to the client's base URL
    form: Mapping[str, str | list[str]] | None = None
    json: Any = None
    params: Mapping[str, str] | None = None
    idempotent: bool = False
    ok_statuses: frozenset[int] = frozenset()  # e.g. {404} for a hangup


@dataclass(frozen=True, slots=True)
class RestResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300
