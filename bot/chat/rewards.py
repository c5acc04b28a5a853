"""Channel-point rewards seen in chat, so the streamer can find their ids.

Twitch tells a chat reader only a reward's id (a UUID), never its title, and
streamers do not know their rewards' ids. So every reward redeemed while the
bot runs is listed here (for the panel), and one the config does not map is
logged once (`twitch.reward_seen`) with the viewer's text, to tell it apart.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import structlog

from adapters.events import ChatMessage

log = structlog.get_logger()

#: Distinct rewards listed; a channel has at most 50, so this bounds only abuse.
REWARDS_LIMIT = 100
#: The example text kept per reward, in characters.
EXAMPLE_CHARS = 100


@dataclass(slots=True)
class SeenReward:
    reward_id: str
    #: The streamer's name for it in `platforms.twitch.rewards`; "" when unmapped.
    name: str
    #: The last text redeemed with it (cut), to recognise which reward it is.
    example: str
    count: int
    #: Unix seconds of the last redemption.
    last_seen: float


class RewardsSeen:
    """The rewards redeemed this run, most recent last."""

    def __init__(self, limit: int = REWARDS_LIMIT) -> None:
        self._rewards: OrderedDict[str, SeenReward] = OrderedDict()
        self._limit = limit

    def saw(self, message: ChatMessage, name: str) -> None:
        """Note a redemption; the first of an unmapped reward is logged."""
        reward_id = message.reward_id
        example = message.text[:EXAMPLE_CHARS]
        seen = self._rewards.pop(reward_id, None)
        if seen is None:
            seen = SeenReward(reward_id, name, example, 0, 0.0)
            if not name:
                log.info(
                    "twitch.reward_seen",
                    reward_id=reward_id,
                    channel=message.channel,
                    user=message.user_name,
                    text=example,
                    hint="map it under platforms.twitch.rewards to read it",
                )
        seen.name = name
        seen.example = example
        seen.count += 1
        seen.last_seen = time.time()
        self._rewards[reward_id] = seen
        while len(self._rewards) > self._limit:
            self._rewards.popitem(last=False)

    def listed(self) -> list[SeenReward]:
        return list(self._rewards.values())
