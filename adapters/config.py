"""What the platform clients' configs share: frozen sections that refuse unknown
keys (a typo is an error, not a silently ignored setting), and URL checks."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def address(value: str, scheme: str, described: str) -> str:
    """A URL of `scheme` or its TLS twin (`scheme` + "s"), with a host."""
    if not re.fullmatch(rf"{scheme}s?://[^\s/]+(/\S*)?", value):
        raise ValueError(f"must be {described} address, got {value!r}")
    return value
