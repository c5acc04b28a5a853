"""The Twitch client's settings (`platforms.twitch` in the config file)."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.config import Section, address
from adapters.twitch.emotes import Service


class TwitchConfig(Section):
    enabled: bool = False
    channels: list[str] = Field(default_factory=list)
    nick: str = ""
    token: SecretStr = SecretStr("")
    url: str = "wss://irc-ws.chat.twitch.tv:443"
    #: Third-party emote APIs by service (a mirror, a test server); others use their own.
    emote_apis: dict[Service, str] = Field(default_factory=dict)

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, value: list[str]) -> list[str]:
        names = [c.strip().lstrip("#").lower() for c in value]
        for name in names:
            if not re.fullmatch(r"[a-z0-9_]{1,25}", name):
                raise ValueError(
                    f"must be Twitch logins (letters, digits, _; up to 25), got {name!r}"
                )
        return names

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        return address(value, "ws", "a ws:// or wss://")

    @field_validator("emote_apis")
    @classmethod
    def _http_urls(cls, value: dict[Service, str]) -> dict[Service, str]:
        for url in value.values():
            address(url, "http", "an http:// or https://")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TwitchConfig:
        if self.enabled and not self.channels:
            raise ValueError("channels: enabled but no channel given")
        if self.token.get_secret_value() and not self.nick:
            raise ValueError("nick: a token needs the bot account's login as nick")
        return self
