"""The Bilibili client's settings (`platforms.bilibili` in the config file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.config import Section, address


class BilibiliConfig(Section):
    enabled: bool = False
    room_id: int = Field(0, ge=0)
    cookie: SecretStr = SecretStr("")
    home_url: str = "https://www.bilibili.com/"
    api_url: str = "https://api.bilibili.com"
    live_api_url: str = "https://api.live.bilibili.com"
    fallback_host: str = "broadcastlv.chat.bilibili.com"
    ws_scheme: Literal["wss", "ws"] = "wss"

    @field_validator("home_url", "api_url", "live_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return address(value, "http", "an http:// or https://")

    @model_validator(mode="after")
    def _consistent(self) -> BilibiliConfig:
        if self.enabled and self.room_id == 0:
            raise ValueError("room_id: enabled but no room id given")
        return self
