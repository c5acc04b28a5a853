"""The Bilibili client's settings (`platforms.bilibili` in the config file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.config import Section, address

#: Where each open-platform setting may come from, for the messages that ask for it.
OPEN_SETTINGS = {
    "identity_code": "ISHOWTTS_BILIBILI_CODE",
    "app_id": "ISHOWTTS_BILIBILI_APP_ID",
    "access_key_id": "ISHOWTTS_BILIBILI_ACCESS_KEY_ID",
    "access_key_secret": "ISHOWTTS_BILIBILI_ACCESS_KEY_SECRET",
}


class BilibiliConfig(Section):
    enabled: bool = False
    #: web: the room's public danmaku stream; open: the open live platform's
    #: session, started with the streamer's identity code.
    mode: Literal["web", "open"] = "web"
    room_id: int = Field(0, ge=0)
    cookie: SecretStr = SecretStr("")
    home_url: str = "https://www.bilibili.com/"
    api_url: str = "https://api.bilibili.com"
    live_api_url: str = "https://api.live.bilibili.com"
    fallback_host: str = "broadcastlv.chat.bilibili.com"
    ws_scheme: Literal["wss", "ws"] = "wss"
    identity_code: SecretStr = SecretStr("")
    app_id: int = Field(0, ge=0)
    access_key_id: SecretStr = SecretStr("")
    access_key_secret: SecretStr = SecretStr("")
    open_api_url: str = "https://live-open.biliapi.com"

    @field_validator("home_url", "api_url", "live_api_url", "open_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return address(value, "http", "an http:// or https://")

    @model_validator(mode="after")
    def _consistent(self) -> BilibiliConfig:
        if not self.enabled:
            return self
        if self.mode == "web" and self.room_id == 0:
            raise ValueError("room_id: enabled but no room id given")
        if self.mode == "open":
            given = {
                "identity_code": bool(self.identity_code.get_secret_value()),
                "app_id": self.app_id > 0,
                "access_key_id": bool(self.access_key_id.get_secret_value()),
                "access_key_secret": bool(self.access_key_secret.get_secret_value()),
            }
            missing = [f"{key} (or {var})" for key, var in OPEN_SETTINGS.items() if not given[key]]
            if missing:
                raise ValueError(f"mode: open needs {', '.join(missing)}")
        return self
