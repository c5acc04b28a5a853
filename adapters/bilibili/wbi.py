"""WBI request signing, which Bilibili's web API asks of getDanmuInfo."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping
from pathlib import PurePosixPath

#: The protocol's fixed permutation that picks the mixin key's 32 characters.
MIXIN_KEY_TABLE = (
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35,
    27, 43, 5, 49, 33, 9, 42, 19, 29, 28, 14, 39, 12, 38, 41, 13,
    37, 48, 7, 16, 24, 55, 40, 61, 26, 17, 0, 1, 60, 51, 30, 4,
    22, 25, 54, 21, 56, 59, 6, 63, 57, 62, 11, 36, 20, 34, 44, 52,
)  # fmt: skip
_STRIPPED = str.maketrans("", "", "!'()*")


def mixin_key(img_url: str, sub_url: str) -> str:
    """The signing key from nav's `wbi_img` URLs (their file stems, permuted)."""
    raw = PurePosixPath(urllib.parse.urlsplit(img_url).path).stem
    raw += PurePosixPath(urllib.parse.urlsplit(sub_url).path).stem
    if len(raw) < 64:
        raise ValueError(f"wbi_img keys too short ({len(raw)} characters, need 64)")
    return "".join(raw[i] for i in MIXIN_KEY_TABLE)[:32]


def sign(params: Mapping[str, object], key: str, now: int) -> dict[str, str]:
    """`params` plus `wts` (unix seconds) and `w_rid` (the MD5 signature)."""
    signed = {k: str(v).translate(_STRIPPED) for k, v in params.items()}
    signed["wts"] = str(now)
    query = urllib.parse.urlencode(sorted(signed.items()))
    signed["w_rid"] = hashlib.md5((query + key).encode(), usedforsecurity=False).hexdigest()
    return signed
