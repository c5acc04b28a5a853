"""The Twitch client's settings (`platforms.twitch` in the config file)."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.config import Section, address, template
from adapters.events import HIGHLIGHTED_MESSAGE
from adapters.twitch.emotes import Service

#: A channel-point reward id as Twitch gives it: a UUID.
_REWARD_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def is_reward_id(value: str) -> bool:
    """A reward's id (a UUID), or "highlighted-message" for Highlight My Message."""
    return value == HIGHLIGHTED_MESSAGE or bool(_REWARD_UUID.fullmatch(value))


class RewardRule(Section):
    """What a redeemed channel-point reward does with the viewer's text."""

    #: The reward's id, when the map's key is a name the streamer chose.
    id: str | None = None
    read: bool = True
    #: A voice for this reward's lines (else the viewer's or the current voice).
    voice: str | None = None
    #: The line read, with {user} and {text} (else the chat template).
    template: str | None = None
    #: The priority level it is read at (else as chat from that viewer).
    priority: int | None = Field(None, ge=0, le=100)

    @field_validator("id")
    @classmethod
    def _reward_id(cls, value: str | None) -> str | None:
        if value is not None and not is_reward_id(value):
            raise ValueError(
                "must be a reward id as `twitch.reward_seen` logs it (a UUID) "
                f"or {HIGHLIGHTED_MESSAGE}, got {value!r}"
            )
        return value.lower() if value is not None and value != HIGHLIGHTED_MESSAGE else value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return value if value is None else template(value)


class TwitchConfig(Section):
    enabled: bool = False
    channels: list[str] = Field(default_factory=list)
    nick: str = ""
    token: SecretStr = SecretStr("")
    url: str = "wss://irc-ws.chat.twitch.tv:443"
    #: Channel-point rewards by id (or by a name of the streamer's, with `id:`).
    rewards: dict[str, RewardRule] = Field(default_factory=dict)
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

    @field_validator("rewards")
    @classmethod
    def _reward_ids(cls, value: dict[str, RewardRule]) -> dict[str, RewardRule]:
        seen: dict[str, str] = {}
        for key, rule in value.items():
            reward = rule.id or key.lower()
            if not is_reward_id(reward):
                raise ValueError(
                    f"{key}: give the reward's id (id: ...) under this name, or use the id "
                    f"as the key (a UUID as `twitch.reward_seen` logs it, or "
                    f"{HIGHLIGHTED_MESSAGE})"
                )
            if reward in seen:
                raise ValueError(f"{key}: reward {reward} is already mapped by {seen[reward]}")
            seen[reward] = key
        return value

    def reward_rules(self) -> dict[str, tuple[str, RewardRule]]:
        """The reward map by reward id: (the streamer's name for it, its rule)."""
        return {rule.id or key.lower(): (key, rule) for key, rule in self.rewards.items()}

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
