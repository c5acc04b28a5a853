"""Chat text as it is said: shorthand from a lexicon, then numbers as words.

`SpeechText.speakable(text, language)` runs two passes over a cleaned line:

- The chat lexicon (`policy.lexicon`), per language: a Twitch line's "gg" is
  "good game", a Bilibili line's "666" is "六六六". Each line gets its own
  language's entries only: "gg" and "lol" in Chinese chat are said as letters,
  and "88" in English chat is a number, not 拜拜.
- Numbers, money, percentages, times, dates, ordinals and units written out,
  the words from num2words (English) and cn2an (Chinese). A number next to
  Chinese characters is read in Chinese whatever the line's language
  ("今天第2名 gg" → "今天第二名 …"); any other in the line's language.

Lexicon keys match whole tokens, any case, and also with their last character
stretched ("gggg", "23333333"):

- keys of Latin letters (and digits, "u1s1") as words: not inside a longer
  word ("eggs", "lollipop" stay as they are);
- keys of digits only as a whole run of digits that is not part of a number,
  an amount or a count: not next to other digits or letters, not in "1.666",
  "$88", "666%", and not before a Chinese character ("88个" is eighty-eight
  of something, "主播666" is praise);
- keys with Chinese characters anywhere (Chinese has no spaces to find words by).

A value "" removes the word from speech; a key mapped to itself is read as
written.

Text with nothing to change comes back as the same string. Every pass is one
compiled regex, built once; a long digit run (over `MAX_NUMBER_DIGITS`, or
`MAX_GROUPED_DIGITS` with thousands commas) is read digit by digit, so hostile
input costs time and words linear in its length.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

import cn2an
from num2words import num2words

from bot.chat.textnorm import HAN, HAS_HAN
from bot.config import LANGUAGES, Language, lexicon_key

#: A longer run of digits is an id or a phone number (or a flood of nines), read
#: digit by digit; with thousands commas it is a quantity up to `MAX_GROUPED_DIGITS`.
MAX_NUMBER_DIGITS = 9
MAX_GROUPED_DIGITS = 15

#: Han plus CJK and full-width punctuation: Chinese context for a number.
_CJK_CONTEXT = re.compile(f"[{HAN}\u3000-\u303f\uff00-\uffef]")
_HAS_DIGIT = re.compile("[0-9]")
#: Letters a Latin key must not touch (a whole word): ASCII and Latin-1/Extended-A/B.
_WORD_CHAR = "0-9A-Za-z\u00c0-\u024f"
#: English words for a number are kept apart from letters or another number they
#: touch: "1v1" is "one v one", "$1$2" is "one dollar two dollars".
_EN_APART_BEFORE = re.compile(f"[{_WORD_CHAR}]")
_EN_APART_AFTER = re.compile("[A-Za-z\u00c0-\u024f]")
_RUNS_OF_SPACES = re.compile(r"[ \t]{2,}")

# --- the number pattern --------------------------------------------------------
#: A number: digits with optional thousands commas and decimals; never the middle
#: of a dotted run ("1.2.3.4", a version), never right after "digit.".
_NUM = r"(?<![0-9])(?<![0-9]\.)(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?![0-9]|\.[0-9])"
_INT = r"(?<![0-9])(?<![0-9]\.)[0-9]+(?![0-9]|\.[0-9])"
#: A minus sign where a number starts ("-5", "温度-5度"), not a dash between numbers.
_NEG = r"(?:(?<![0-9A-Za-z.,:/\-])[-\u2212])?"

#: Units read after a number: (English singular, plural, Chinese or None to keep
#: the unit as written). Single letters that mean several things ("m": metres,
#: minutes, millions; "g": grams, 5G; "s") are left out.
_UNITS: dict[str, tuple[str, str, str | None]] = {
    "km/h": ("kilometer per hour", "kilometers per hour", "公里每小时"),
    "kph": ("kilometer per hour", "kilometers per hour", "公里每小时"),
    "mph": ("mile per hour", "miles per hour", "英里每小时"),
    "kg": ("kilogram", "kilograms", "公斤"),
    "km": ("kilometer", "kilometers", "公里"),
    "cm": ("centimeter", "centimeters", "厘米"),
    "mm": ("millimeter", "millimeters", "毫米"),
    "mi": ("mile", "miles", "英里"),
    "lbs": ("pound", "pounds", "磅"),
    "lb": ("pound", "pounds", "磅"),
    "ft": ("foot", "feet", "英尺"),
    "mins": ("minute", "minutes", "分钟"),
    "min": ("minute", "minutes", "分钟"),
    "hrs": ("hour", "hours", "小时"),
    "hr": ("hour", "hours", "小时"),
    "h": ("hour", "hours", "小时"),
    "secs": ("second", "seconds", "秒"),
    "sec": ("second", "seconds", "秒"),
    "ms": ("millisecond", "milliseconds", "毫秒"),
    "kb": ("kilobyte", "kilobytes", None),
    "mb": ("megabyte", "megabytes", None),
    "gb": ("gigabyte", "gigabytes", None),
    "tb": ("terabyte", "terabytes", None),
    "fps": ("frame per second", "frames per second", None),
    "hz": ("hertz", "hertz", "赫兹"),
    "°c": ("degree Celsius", "degrees Celsius", "摄氏度"),
    "℃": ("degree Celsius", "degrees Celsius", "摄氏度"),
    "°f": ("degree Fahrenheit", "degrees Fahrenheit", "华氏度"),
    "℉": ("degree Fahrenheit", "degrees Fahrenheit", "华氏度"),
    "°": ("degree", "degrees", "度"),
}
_UNIT_ALTERNATIVES = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))

#: Currency signs: (English unit, units, cent, cents or None, Chinese unit).
_CURRENCIES: dict[str, tuple[str, str, str | None, str | None, str]] = {
    "$": ("dollar", "dollars", "cent", "cents", "美元"),
    "€": ("euro", "euros", "cent", "cents", "欧元"),
    "£": ("pound", "pounds", "penny", "pence", "英镑"),
    "¥": ("yuan", "yuan", None, None, "元"),
    "￥": ("yuan", "yuan", None, None, "元"),
}
#: Amounts written with a magnitude ("$5k"): (English word, factor).
_MAGNITUDES = {"k": ("thousand", 10**3), "m": ("million", 10**6), "b": ("billion", 10**9)}

#: Every written-number form, tried in this order at each place a number starts.
_NUMBER = re.compile(
    rf"""
    (?P<date>(?<![0-9])(?P<year>[0-9]{{4}})(?P<sep>[-/.])(?P<month>[0-9]{{1,2}})(?P=sep)
        (?P<day>[0-9]{{1,2}})(?![0-9]|\.[0-9]))
  | (?P<time>(?<![0-9:.])(?P<hour>[01]?[0-9]|2[0-3]):(?P<minute>[0-5][0-9])(?![0-9]|:[0-9])
        (?:[ ]?(?P<half>[ap])\.?m\.?(?![A-Za-z]))?)
  | (?P<clock>(?<![0-9.])(?P<clock_hour>1[0-2]|0?[1-9])[ ]?(?P<clock_half>[ap])\.?m\.?
        (?![A-Za-z]))
  | (?P<zh_year>(?<![0-9.])[0-9]{{4}}(?=年))
  | (?P<decade>(?<![0-9.])(?P<decade_num>(?:[0-9]{{2}})?[0-9]0)['’]?s(?![A-Za-z]))
  | (?P<money>(?P<currency>[$€£¥￥])[ ]?(?P<amount>{_NUM})
        (?:(?P<magnitude>[kmb])(?:n)?)?(?![A-Za-z]))
  | (?P<percent>(?P<percent_neg>{_NEG})(?P<percent_num>{_NUM})[ ]?[%％])
  | (?P<ordinal>(?P<ordinal_num>{_INT})(?:st|nd|rd|th)(?![A-Za-z]))
  | (?P<unit>(?P<unit_neg>{_NEG})(?P<unit_num>{_NUM})[ ]?(?P<unit_name>{_UNIT_ALTERNATIVES})
        (?![A-Za-z]))
  | (?P<hash>\#(?P<hash_num>{_INT}))
  | (?P<plain>(?P<plain_neg>{_NEG})(?P<plain_num>{_NUM}))
    """,
    re.VERBOSE | re.IGNORECASE,
)

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# --- number words ---------------------------------------------------------------
_EN_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_ZH_DIGITS = "零一二三四五六七八九"
#: Measure words after which 2 is 两 ("两个", "两点"), not 二.
_ZH_LIANG_BEFORE = frozenset("个只次位天张条块岁件本周年场把根局杯份瓶遍倍分点")


@functools.lru_cache(maxsize=4096)  # a flood of one number costs one conversion
def _en_words(value: int, to: str = "cardinal") -> str:
    """num2words' English, said plainly: no commas, no hyphens."""
    return str(num2words(value, lang="en", to=to)).replace(",", "").replace("-", " ")


def _en_digits(digits: str) -> str:
    return " ".join(_EN_DIGITS[int(d)] for d in digits)


def _zh_digits(digits: str) -> str:
    return "".join(_ZH_DIGITS[int(d)] for d in digits)


def _by_digit(digits: str, grouped: bool = False) -> bool:
    """Read digit by digit: a long run, or one with a leading zero ("007")."""
    longest = MAX_GROUPED_DIGITS if grouped else MAX_NUMBER_DIGITS
    return len(digits) > longest or (len(digits) > 1 and digits[0] == "0")


def _en_int(digits: str, grouped: bool = False) -> str:
    return _en_digits(digits) if _by_digit(digits, grouped) else _en_words(int(digits))


def _zh_int(digits: str, grouped: bool = False) -> str:
    if _by_digit(digits, grouped):
        return _zh_digits(digits)
    return _zh_words(digits)


@functools.lru_cache(maxsize=4096)
def _zh_words(digits: str) -> str:
    """cn2an's Chinese for a whole number."""
    return str(cn2an.an2cn(digits, "low"))


def _split(number: str) -> tuple[str, str]:
    """ "1,234.50" → ("1234", "50")."""
    whole, _, fraction = number.replace(",", "").partition(".")
    return whole, fraction


def _en_number(number: str) -> str:
    whole, fraction = _split(number)
    words = _en_int(whole, grouped="," in number)
    return f"{words} point {_en_digits(fraction)}" if fraction else words


def _zh_number(number: str) -> str:
    whole, fraction = _split(number)
    words = _zh_int(whole, grouped="," in number)
    return f"{words}点{_zh_digits(fraction)}" if fraction else words


def _scaled(number: str, factor: int) -> str | None:
    """`number` × `factor` as plain digits, or None past the digit cap."""
    try:
        value = Decimal(number.replace(",", "")) * factor
    except InvalidOperation:
        return None
    text = format(value.normalize(), "f")
    return text if len(text) <= MAX_GROUPED_DIGITS else None


# --- one reader per language ----------------------------------------------------


def _money_split(amount: str) -> tuple[str, str]:
    """`_split`, without the leading zeros that mean nothing in an amount ("$05")."""
    whole, fraction = _split(amount)
    return whole.lstrip("0") or "0", fraction


def _en_money(m: re.Match[str]) -> str:
    one, many, cent, cents, _ = _CURRENCIES[m["currency"]]
    amount = m["amount"]
    if m["magnitude"]:
        word, _factor = _MAGNITUDES[m["magnitude"].lower()]
        return f"{_en_number(amount)} {word} {many}"
    whole, fraction = _money_split(amount)
    words = _en_int(whole, grouped="," in amount)
    units = one if whole == "1" and not fraction else many
    if cent is None or cents is None or len(fraction) != 2:
        return f"{words} point {_en_digits(fraction)} {units}" if fraction else f"{words} {units}"
    parts = []
    if whole != "0" or fraction == "00":
        parts.append(f"{words} {one if whole == '1' else many}")
    if fraction != "00":
        parts.append(f"{_en_int(fraction.lstrip('0'))} {cent if fraction == '01' else cents}")
    return " and ".join(parts)


def _zh_money(m: re.Match[str]) -> str:
    unit = _CURRENCIES[m["currency"]][4]
    amount = m["amount"]
    grouped = "," in amount
    if m["magnitude"]:
        scaled = _scaled(amount, _MAGNITUDES[m["magnitude"].lower()][1])
        if scaled is None:
            return m[0]
        amount, grouped = scaled, True
    whole, fraction = _money_split(amount)
    fraction = fraction.rstrip("0")
    words = _zh_int(whole, grouped)
    return (f"{words}点{_zh_digits(fraction)}" if fraction else words) + unit


def _en_time(hour: str, minute: str, half: str | None) -> str:
    words = _en_int(hour.lstrip("0") or "0")
    if minute == "00":
        words += " o'clock" if half is None else ""
    elif minute[0] == "0":
        words += f" oh {_EN_DIGITS[int(minute[1])]}"
    else:
        words += f" {_en_int(minute)}"
    return f"{words} {half.lower()} m" if half else words


def _zh_time(hour: str, minute: str | None, half: str | None) -> str:
    h = hour.lstrip("0") or "0"
    words = ("两" if h == "2" else _zh_int(h)) + "点"
    if minute and minute != "00":
        words += ("零" + _ZH_DIGITS[int(minute[1])] if minute[0] == "0" else _zh_int(minute)) + "分"
    if half:
        words = ("上午" if half.lower() == "a" else "下午") + words
    return words


def _en_read(m: re.Match[str]) -> str:
    if m["date"]:
        month, day = int(m["month"]), int(m["day"])
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return _PLAIN.sub(lambda p: _en_number(p[0]), m[0])
        year = _en_words(int(m["year"]), to="year")
        return f"{_MONTHS[month - 1]} {_en_words(day, to='ordinal')} {year}"
    if m["time"]:
        return _en_time(m["hour"], m["minute"], m["half"])
    if m["clock"]:
        return _en_time(m["clock_hour"], "00", m["clock_half"])
    if m["zh_year"]:
        return _en_words(int(m["zh_year"]), to="year")
    if m["decade"]:
        decade = int(m["decade_num"])
        words = _en_words(decade, to="year" if decade >= 1000 else "cardinal")
        return words[:-1] + "ies" if words.endswith("y") else words + "s"
    if m["money"]:
        return _en_money(m)
    if m["percent"]:
        return _en_sign(m["percent_neg"]) + _en_number(m["percent_num"]) + " percent"
    if m["ordinal"]:
        digits = m["ordinal_num"]
        return m[0] if _by_digit(digits) else _en_words(int(digits), to="ordinal")
    if m["unit"]:
        one, many, _ = _UNITS[m["unit_name"].lower()]
        number = m["unit_num"]
        unit = one if number == "1" else many
        return f"{_en_sign(m['unit_neg'])}{_en_number(number)} {unit}"
    if m["hash"]:
        return "number " + _en_int(m["hash_num"])
    return _en_sign(m["plain_neg"]) + _en_number(m["plain_num"])


def _zh_read(m: re.Match[str]) -> str:
    if m["date"]:
        month, day = int(m["month"]), int(m["day"])
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return _PLAIN.sub(lambda p: _zh_number(p[0]), m[0])
        return f"{_zh_digits(m['year'])}年{_zh_int(str(month))}月{_zh_int(str(day))}日"
    if m["time"]:
        return _zh_time(m["hour"], m["minute"], m["half"])
    if m["clock"]:
        return _zh_time(m["clock_hour"], None, m["clock_half"])
    if m["zh_year"]:
        return _zh_digits(m["zh_year"])
    if m["decade"]:
        digits = m["decade_num"]
        return (_zh_digits(digits) if len(digits) == 4 else _zh_int(digits)) + "年代"
    if m["money"]:
        return _zh_money(m)
    if m["percent"]:
        return _zh_sign(m["percent_neg"]) + "百分之" + _zh_number(m["percent_num"])
    if m["ordinal"]:
        digits = m["ordinal_num"]
        return "第" + _zh_int(digits)
    if m["unit"]:
        chinese = _UNITS[m["unit_name"].lower()][2]
        unit = chinese if chinese is not None else m["unit_name"]
        return _zh_sign(m["unit_neg"]) + _zh_number(m["unit_num"]) + unit
    if m["hash"]:
        return _zh_int(m["hash_num"]) + "号"
    number = m["plain_num"]
    if number == "2" and not m["plain_neg"] and _before_measure_word(m.string, m.start(), m.end()):
        return "两"
    return _zh_sign(m["plain_neg"]) + _zh_number(number)


def _before_measure_word(text: str, start: int, end: int) -> bool:
    """Whether a 2 here counts something ("2个", "2点"), so is 两: not "第2", not "2点5"."""
    follows = text[end : end + 1]
    return (
        follows in _ZH_LIANG_BEFORE
        and text[start - 1 : start] != "第"
        and not text[end + 1 : end + 2].isdigit()
    )


def _en_sign(sign: str | None) -> str:
    return "minus " if sign else ""


def _zh_sign(sign: str | None) -> str:
    return "负" if sign else ""


#: Plain numbers only (a date that is not one is read as its numbers).
_PLAIN = re.compile(_NUM)


def _chinese_context(text: str, start: int, end: int) -> bool:
    """Whether the nearest character before or after [start, end), past spaces, is Chinese."""
    before = start - 1
    while before >= 0 and text[before] in " \t":
        before -= 1
    if before >= 0 and _CJK_CONTEXT.match(text, before):
        return True
    after = end
    while after < len(text) and text[after] in " \t":
        after += 1
    return after < len(text) and _CJK_CONTEXT.match(text, after) is not None


# --- the lexicon ------------------------------------------------------------------


def _key_pattern(key: str) -> str:
    """A key's regex: its words with any spaces between, its last character stretchable."""
    words = r"\s+".join(re.escape(word) for word in key.split())
    return words + re.escape(key[-1]) + "*"


def _lexicon_pattern(keys: list[str]) -> re.Pattern[str] | None:
    """One regex for a language's keys, longest first, each kind with its boundaries."""
    latin, digits, han = [], [], []
    for key in sorted(keys, key=lambda k: (-len(k), k)):
        if HAS_HAN.search(key):
            han.append(_key_pattern(key))
        elif key.isascii() and key.isdigit():
            digits.append(_key_pattern(key))
        else:
            latin.append(_key_pattern(key))
    parts = []
    if latin:
        parts.append(rf"(?<![{_WORD_CHAR}])(?:{'|'.join(latin)})(?![{_WORD_CHAR}])")
    if digits:
        parts.append(
            rf"(?<![{_WORD_CHAR}.,:$€£¥￥#+/\-])(?:{'|'.join(digits)})(?![{_WORD_CHAR}.,:%％/°{HAN}])"
        )
    if han:
        parts.append("|".join(han))
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class SpeechText:
    """The lexicon and the number reading for each language, compiled once."""

    def __init__(self, lexicon: Mapping[Language, Mapping[str, str]] | None = None) -> None:
        self._tables: dict[str, dict[str, str]] = {}
        self._patterns: dict[str, re.Pattern[str] | None] = {}
        for language in LANGUAGES:
            entries = (lexicon or {}).get(language, {})
            table = {lexicon_key(k): v for k, v in entries.items() if k.strip()}
            self._tables[language] = table
            self._patterns[language] = _lexicon_pattern(list(table))

    def lexicon(self, text: str, language: str) -> str:
        """`text` with the language's shorthand as words (whole tokens, any case)."""
        language = _language(language)
        pattern = self._patterns[language]
        if pattern is None:
            return text
        table = self._tables[language]
        removed = False

        def say(m: re.Match[str]) -> str:
            nonlocal removed
            key = lexicon_key(m[0])
            while key not in table and len(key) > 1 and key[-1] == key[-2]:
                key = key[:-1]  # the stretched last character ("gggg" → "gg")
            value = table.get(key)
            if value is None:
                return m[0]
            removed = removed or not value
            return value

        out = pattern.sub(say, text)
        return _RUNS_OF_SPACES.sub(" ", out).strip() if removed else out

    def normalise(self, text: str, language: str) -> str:
        """`text` with numbers, money, times, dates, ordinals and units as words."""
        if not _HAS_DIGIT.search(text):
            return text
        line_reader = _zh_read if _language(language) == "zh" else _en_read

        def read(m: re.Match[str]) -> str:
            start, end = m.span()
            if line_reader is _zh_read or _chinese_context(text, start, end):
                return _zh_read(m)
            words = _en_read(m)  # apart from what it touches: "1v1" → "one v one"
            if start and _EN_APART_BEFORE.match(text, start - 1):
                words = " " + words
            if _EN_APART_AFTER.match(text, end):
                words += " "
            return words

        return _NUMBER.sub(read, text)

    def speakable(self, text: str, language: str) -> str:
        """The lexicon, then the numbers: how a chat line is said."""
        return self.normalise(self.lexicon(text, language), language)


def _language(language: str) -> str:
    return language if language in LANGUAGES else "en"
