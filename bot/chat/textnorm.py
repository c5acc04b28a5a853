"""Text clean-up for speech: pure string functions the speech policy composes.

Each function takes and returns `str` and knows nothing of chat or config, so
the rules ("hahahahaha" → "hahaha", zalgo stripped, CJK left alone) can be
read and tested one at a time.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence, Set

#: Categories that never carry speech: controls, format (zero-width, bidi
#: overrides, soft hyphen…), surrogates, private use, unassigned.
_DROP_CATEGORIES = frozenset({"Cf", "Cs", "Co", "Cn"})

#: Real scripts stack at most about three marks on a letter (Thai, Vietnamese
#: in NFD); a longer run is a "zalgo" flood and is removed whole.
MAX_COMBINING_RUN = 3

#: Top-level domains a bare "name.tld" link is recognised by.
_TLDS = "com|net|org|tv|gg|io|ly|be|me|co|cn|uk|de|jp|ru|xyz|app|dev|live|info|link|site|shop"

#: A bare domain is tried only where a dotted name begins (not after a label
#: character, nor after "label."): a failed try then costs the length of its own
#: name, never the rest of the line again from each later label, so a line of
#: "a.a.a.…" is linear, not quadratic. Any later label that could start a link
#: is inside the same name, which the first try already covered.
_URL = re.compile(
    r"(?:https?://|www\.)\S+"
    rf"|(?<![a-z0-9-])(?<![a-z0-9-]\.)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:{_TLDS})\b(?:/\S*)?",
    re.IGNORECASE,
)

_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # mahjong … symbols & pictographs ext-A (incl. skin tones)
    "\u2600-\u27bf"  # misc symbols, dingbats
    "\u2b00-\u2bff"  # arrows & stars (⭐)
    "\u2300-\u23ff"  # misc technical (⌚ ⏰)
    "\u2190-\u21ff\u25a0-\u25ff"  # arrows, geometric shapes
    "\u2934\u2935\u3030\u303d\u3297\u3299\u00a9\u00ae\u2122"
    "\ufe0e\ufe0f\u200d\u20e3"  # variation selectors, ZWJ, keycap
    "\U000e0020-\U000e007f"  # tag sequences (flags of regions)
    "]+"
)

_WHITESPACE = re.compile(r"\s+")
#: Han ideographs (a character class's body): unified, extension A,
#: compatibility, extensions B on. A line or a number with one is Chinese.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
HAS_HAN = re.compile(f"[{HAN}]")

#: Sentence ends, ASCII and full-width/CJK.
SENTENCE_END = frozenset(".!?。！？…")
#: Softer breaks a long line may be cut at.
CLAUSE_BREAK = frozenset(",;:，、；：")


def clean_unicode(text: str) -> str:
    """NFC, controls to spaces, invisible characters and mark floods removed."""
    if text.isascii() and text.isprintable():
        return text  # most chat: nothing to change (and this runs per message)
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    marks: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Mn", "Me"):
            marks.append(ch)
            continue
        if marks:
            if len(marks) <= MAX_COMBINING_RUN:
                out.extend(marks)
            marks.clear()
        if cat == "Cc":
            out.append(" ")
        elif cat not in _DROP_CATEGORIES:
            out.append(_fullwidth_alnum_to_ascii(ch))
    if len(marks) <= MAX_COMBINING_RUN:
        out.extend(marks)
    return "".join(out)


def _fullwidth_alnum_to_ascii(ch: str) -> str:
    # Full-width letters and digits read like ASCII ones; full-width
    # punctuation is kept, as CJK sentence splitting relies on it.
    code = ord(ch)
    if 0xFF10 <= code <= 0xFF19 or 0xFF21 <= code <= 0xFF3A or 0xFF41 <= code <= 0xFF5A:
        return chr(code - 0xFEE0)
    return ch


#: Letters of other scripts drawn like Latin ones, and "_" (a word joiner in
#: names: "slur_lord"), folded for matching. Math alphanumerics, full-width and
#: circled letters need no entry: NFKC already makes them plain Latin.
_LOOKALIKES = str.maketrans(
    {
        # Cyrillic, both cases (capitals where they look unlike the small letter).
        **dict.fromkeys("Аа", "a"),
        **dict.fromkeys("ВвЬь", "b"),
        **dict.fromkeys("Сс", "c"),
        **dict.fromkeys("Ԁԁ", "d"),
        **dict.fromkeys("Ее", "e"),
        **dict.fromkeys("НнҺһ", "h"),
        **dict.fromkeys("Іі", "i"),
        **dict.fromkeys("Јј", "j"),
        **dict.fromkeys("Кк", "k"),
        **dict.fromkeys("Ӏӏ", "l"),
        **dict.fromkeys("Мм", "m"),
        **dict.fromkeys("Оо", "o"),
        **dict.fromkeys("Рр", "p"),
        **dict.fromkeys("Ԛԛ", "q"),
        **dict.fromkeys("Ѕѕ", "s"),
        **dict.fromkeys("Тт", "t"),
        **dict.fromkeys("Уу", "y"),
        **dict.fromkeys("Ԝԝ", "w"),
        **dict.fromkeys("Хх", "x"),
        # Greek.
        **dict.fromkeys("Αα", "a"),
        **dict.fromkeys("Ββ", "b"),
        **dict.fromkeys("Ϲϲ", "c"),
        **dict.fromkeys("Εε", "e"),
        "Η": "h",
        **dict.fromkeys("Ιι", "i"),
        **dict.fromkeys("Κκ", "k"),
        "Μ": "m",
        **dict.fromkeys("Νη", "n"),
        **dict.fromkeys("Οο", "o"),
        **dict.fromkeys("Ρρ", "p"),
        **dict.fromkeys("Ττ", "t"),
        **dict.fromkeys("υμ", "u"),
        "ν": "v",
        "ω": "w",
        **dict.fromkeys("Χχ", "x"),
        **dict.fromkeys("Υγ", "y"),
        "Ζ": "z",
        # Latin letters NFKC leaves alone: IPA and small capitals.
        **dict.fromkeys("ɑᴀ", "a"),
        "ʙ": "b",
        "ᴄ": "c",
        "ᴅ": "d",
        "ᴇ": "e",
        **dict.fromkeys("ɡɢ", "g"),
        "ʜ": "h",
        **dict.fromkeys("ıɪ", "i"),
        "ᴊ": "j",
        "ᴋ": "k",
        "ʟ": "l",
        "ᴍ": "m",
        "ɴ": "n",
        "ᴏ": "o",
        "ᴘ": "p",
        "ʀ": "r",
        "ꜱ": "s",
        "ᴛ": "t",
        "ᴜ": "u",
        "ᴠ": "v",
        "ᴡ": "w",
        "ʏ": "y",
        "ᴢ": "z",
        "_": " ",
    }
)


def _accented_alphabet(ch: str) -> bool:
    """Latin, Greek and Cyrillic, whose accents are dropped for matching (not
    kana or hangul, where a mark or a jamo makes another word)."""
    return ch < "\u0530" or "\u1e00" <= ch <= "\u1fff"


@functools.lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    out: list[str] = []
    for c in unicodedata.normalize("NFKC", ch):
        if _accented_alphabet(c):
            c = "".join(d for d in unicodedata.normalize("NFD", c) if not unicodedata.combining(d))
        out.append(c.translate(_LOOKALIKES).casefold().translate(_LOOKALIKES))
    return "".join(out)


_ASCII_FOLD = str.maketrans({"_": " "})


def match_form(text: str) -> tuple[str, Sequence[int]]:
    """`text` as word filters see it, with the index in `text` of each of its characters.

    NFKC, case-folded, accents on Latin/Greek/Cyrillic letters dropped and
    look-alike letters made Latin ("bаd" with a Cyrillic а, "𝐛𝐚𝐝", "ＢＡＤ", "bád"
    all read "bad"),
    so a filter catches what a listener would hear; the indices let a match be
    masked in the text itself.
    """
    if text.isascii():
        return text.lower().translate(_ASCII_FOLD), range(len(text))
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch) in ("Mn", "Me") and out and _accented_alphabet(out[-1][-1:]):
            continue
        folded = _fold_char(ch)
        out.append(folded)
        where.extend([i] * len(folded))
    return "".join(out), where


_NAME_JOINS = re.compile(
    r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])"
)


def name_words(name: str) -> str:
    """A user name split where its words were run together ("SlurLord99",
    "slur.lord") so that word filters see each word."""
    return _NAME_JOINS.sub(" ", name).replace(".", " ").replace("-", " ")


def remove_spans(text: str, spans: tuple[tuple[int, int], ...]) -> str:
    """Blank out inclusive code-point spans (Twitch emote positions); bad spans are ignored."""
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        if 0 <= start <= end < len(chars):
            for i in range(start, end + 1):
                chars[i] = " "
    return "".join(chars)


#: Punctuation a word in chat may carry after it ("KEKW!", "Pog,").
_TRAILING_PUNCTUATION = ".,!?;…。！？，、；"


def remove_words(text: str, words: Set[str]) -> str:
    """Drop the whitespace-separated tokens that are exactly (case and all) one of
    `words` (emote names that arrive as plain words), also with punctuation after
    them; a sentence end they carried goes to the word before ("nice KEKW!" →
    "nice!"). `text` is returned as it is when none is there."""
    if not words:
        return text
    tokens = text.split()
    kept: list[str] = []
    for token in tokens:
        if token in words:
            continue
        core = token.rstrip(_TRAILING_PUNCTUATION)
        if core == token or core not in words:
            kept.append(token)
            continue
        ends = "".join(ch for ch in token[len(core) :] if ch in SENTENCE_END)
        if kept and ends and kept[-1][-1] not in SENTENCE_END:
            kept[-1] += ends
    return text if len(kept) == len(tokens) else " ".join(kept)


def find_links(text: str) -> bool:
    return _URL.search(text) is not None


def replace_links(text: str, word: str) -> str:
    return _URL.sub(f" {word} " if word else " ", text)


def strip_emoji(text: str) -> str:
    return _EMOJI.sub(" ", text)


def collapse_repeats(text: str, max_char_repeats: int, max_word_repeats: int) -> str:
    """ "hahahahaha" → "hahaha", "lol lol lol lol" → "lol lol"; numbers are left alone."""
    unit = re.compile(rf"(.{{1,4}}?)\1{{{max_char_repeats},}}", re.DOTALL)

    def shorten(match: re.Match[str]) -> str:
        piece = match.group(1)
        if piece.isdigit():
            return match.group(0)
        return piece * max_char_repeats

    text = unit.sub(shorten, text)
    words = re.compile(rf"\b(\w+)(?:\s+\1\b){{{max_word_repeats},}}", re.IGNORECASE)
    return words.sub(lambda m: " ".join([m.group(1)] * max_word_repeats), text)


def normalise_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def is_cjk(ch: str) -> bool:
    """Wide characters (Han, kana, hangul): each one is a word of its own for cutting."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and ch.isalnum()


def cap_length(text: str, limit: int) -> str:
    """Cut to at most `limit` characters at a sentence end, else a word boundary."""
    if len(text) <= limit:
        return text
    sentence_cut = 0
    clause_cut = 0
    word_cut = 0
    for i in range(1, limit + 1):
        before, after = text[i - 1], text[i]
        if before in SENTENCE_END and after not in SENTENCE_END:
            sentence_cut = i
        elif before in CLAUSE_BREAK:
            clause_cut = i
        if after.isspace() or before.isspace() or is_cjk(before) or is_cjk(after):
            word_cut = i
    for cut in (sentence_cut, clause_cut):
        if cut >= limit // 2:
            return text[:cut].strip()
    if word_cut > 0:
        return text[:word_cut].strip()
    return text[:limit]
