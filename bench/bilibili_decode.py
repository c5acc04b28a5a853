"""Packets decoded per second, one core, for a realistic Bilibili brotli mix.

Run: python -m bench.bilibili_decode [--seconds 5]
Prints one JSON line. Goal: >= 50,000 packets/s.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from adapters.bilibili.codec import BilibiliCodec, DecodeFailed
from tests.bilibili import fixtures as fx


def make_frames(count: int, per_frame: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    frames = []
    for f in range(count):
        docs = []
        for p in range(per_frame):
            roll = rng.random()
            n = f * per_frame + p
            if roll < 0.6:
                docs.append(fx.danmaku(id_str=f"d{n}", text="主播好厉害！" * rng.randint(1, 4)))
            elif roll < 0.85:
                docs.append(fx.interact_word())
            elif roll < 0.95:
                docs.append(fx.gift("gold" if rng.random() < 0.5 else "silver"))
            else:
                docs.append(fx.superchat(sc_id=n))
        frames.append(fx.brotli_batch(*docs))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--per-frame", type=int, default=10)
    args = parser.parse_args()
    frames = make_frames(500, args.per_frame)
    codec = BilibiliCodec(fx.ROOM, fx.OWNER)
    packets = events = failures = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    while time.perf_counter() < deadline:
        for frame in frames:
            out = codec.feed(frame, 0.0)
            packets += args.per_frame
            events += len(out)
            failures += sum(isinstance(e, DecodeFailed) for e in out)
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "bench": "bilibili_decode",
                "packets": packets,
                "seconds": round(elapsed, 3),
                "packets_per_s": round(packets / elapsed),
                "frames_per_s": round(packets / args.per_frame / elapsed),
                "events": events,
                "decode_failures": failures,
                "goal_packets_per_s": 50_000,
            }
        )
    )


if __name__ == "__main__":
    main()
