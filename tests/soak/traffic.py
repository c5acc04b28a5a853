"""Chat as the loopback servers send it: unique ids, many users, two languages."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.bilibili import fixtures as fx

CHANNEL = "#chan"

ENGLISH = [
    "hello chat",
    "that was a great play",
    "what game is this",
    "lol",
    "can you say hi to my friend",
    "the music is really nice today",
    "how long have you been streaming",
    "gg",
    "first time here, love the vibe",
    "is the boss fight next? I have been waiting all week for this one",
]
CHINESE = [
    "主播好",
    "哈哈哈",
    "这个好厉害",
    "来了来了",
    "今天玩什么游戏",
    "加油！我一直在看你的直播",
]


def twitch_privmsg(msg_id: str, uid: int, text: str, bits: int = 0) -> str:
    tags = [
        "badge-info=",
        "badges=",
        *([f"bits={bits}"] if bits else []),
        f"display-name=Viewer{uid}",
        "emotes=",
        "first-msg=0",
        f"id={msg_id}",
        "mod=0",
        "room-id=1",
        "subscriber=0",
        f"tmi-sent-ts={int(time.time() * 1000)}",
        f"user-id={uid}",
        "user-type=",
    ]
    return f"@{';'.join(tags)} :v{uid}!v{uid}@v{uid}.tmi.twitch.tv PRIVMSG {CHANNEL} :{text}"


def twitch_clearchat(uid: int) -> str:
    """A ban: every message of this user is retracted."""
    tags = f"@room-id=1;target-user-id={uid};tmi-sent-ts=1"
    return f"{tags} :tmi.twitch.tv CLEARCHAT {CHANNEL} :v{uid}"


def twitch_clearmsg(msg_id: str) -> str:
    return f"@login=v;room-id=;target-msg-id={msg_id} :tmi.twitch.tv CLEARMSG {CHANNEL} :gone"


@dataclass
class Traffic:
    """Makes chat with ids the harness can follow to their end in the bot's log."""

    seed: int = 0
    users: int = 300
    counter: int = 0
    rng: random.Random = field(init=False)
    #: Twitch user id of each sent Twitch message (for bans), by key.
    twitch_users: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _text(self) -> str:
        pool = CHINESE if self.rng.random() < 0.3 else ENGLISH
        return self.rng.choice(pool)

    def twitch(self, count: int) -> list[tuple[str, str]]:
        """(key, IRC line) pairs; a few carry bits, so priorities mix."""
        out = []
        for _ in range(count):
            self.counter += 1
            msg_id, uid = f"t{self.counter}", self.rng.randint(1, self.users)
            bits = 100 if self.rng.random() < 0.02 else 0
            text = (f"Cheer{bits} " if bits else "") + self._text()
            key = f"twitch:{msg_id}"
            self.twitch_users[key] = uid
            out.append((key, twitch_privmsg(msg_id, uid, text, bits)))
        return out

    def bilibili(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        """(key, DANMU_MSG body) pairs."""
        out = []
        for _ in range(count):
            self.counter += 1
            id_str, uid = f"b{self.counter}", self.rng.randint(1, self.users)
            doc = fx.danmaku(text=self._text(), uid=uid, name=f"观众{uid}", id_str=id_str)
            out.append((f"bilibili:{id_str}", doc))
        return out

    def superchat(self) -> tuple[str, dict[str, Any]]:
        self.counter += 1
        return f"bilibili:sc:{self.counter}", fx.superchat(sc_id=self.counter, price=30)
