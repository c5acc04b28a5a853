"""What the platform clients' configs share: frozen sections that refuse unknown
keys (a typo is an error, not a silently ignored setting), and URL checks."""

from __future__ import annotations

import re
import string
from collections.abc import Set

from pydantic import BaseModel, ConfigDict

#: What a spoken-line template may name.
TEMPLATE_FIELDS = frozenset({"user", "amount", "text"})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def address(value: str, scheme: str, described: str) -> str:
    """A URL of `scheme` or its TLS twin (`scheme` + "s"), with a host."""
    if not re.fullmatch(rf"{scheme}s?://[^\s/]+(/\S*)?", value):
        raise ValueError(f"must be {described} address, got {value!r}")
    return value


def template(value: str, fields: Set[str] = TEMPLATE_FIELDS) -> str:
    """A `str.format` template naming only `fields` (a typo is an error at load,
    not a crash on air)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"broken template ({exc}): {value!r}") from None
    unknown = names - fields
    if unknown:
        first = sorted(unknown)[0]
        allowed = ", ".join(f"{{{name}}}" for name in sorted(fields))
        raise ValueError(f"unknown placeholder {{{first}}}; allowed: {allowed}")
    return value
