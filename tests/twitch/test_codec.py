from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.events import (
    ChatMessage,
    EventKind,
    Paid,
    PaidKind,
    Platform,
    Retraction,
    Role,
    SubTier,
)
from adapters.twitch import codec
from adapters.twitch.codec import (
    DecodeError,
    DecodeFailed,
    IrcMessage,
    LineSplitter,
    TwitchCodec,
    parse_line,
    to_events,
    unescape_tag_value,
)

LINES = [
    line.replace("\\x01", "\x01")
    for line in (Path(__file__).parent / "lines.txt").read_text(encoding="utf-8").splitlines()
]
NOW = 500.0


def events_of(line: str) -> list[codec.TwitchEvent]:
    return to_events(parse_line(line), "justinfan123", NOW)


def one(line: str) -> codec.TwitchEvent:
    (event,) = events_of(line)
    return event


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\\sb", "a b"),
        ("a\\:b", "a;b"),
        ("a\\\\b", "a\\b"),
        ("a\\\\sb", "a\\sb"),  # chained str.replace would give "a\\ b"
        ("a\\rb\\nc", "a\rb\nc"),
        ("a\\xb", "axb"),
        ("trailing\\", "trailing"),
        ("plain", "plain"),
    ],
)
def test_unescape(raw: str, expected: str) -> None:
    assert unescape_tag_value(raw) == expected


def test_escape_round_trips() -> None:
    value = "a;b c\\d\r\n"
    assert unescape_tag_value(codec.escape_tag_value(value)) == value


def test_parse_full_line() -> None:
    msg = parse_line(LINES[0])
    assert msg.command == "PRIVMSG"
    assert msg.prefix == "nekochan!nekochan@nekochan.tmi.twitch.tv"
    assert msg.nick == "nekochan"
    assert msg.params == ("#somestreamer", "Cheer100 hi from a lurker")
    assert msg.tags["display-name"] == "NekoChan"
    assert msg.tags["emotes"] == ""
    assert msg.tags["user-type"] == ""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("PING :tmi.twitch.tv", IrcMessage("PING", ("tmi.twitch.tv",))),
        (":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!", None),
        ("PRIVMSG #c ::)", IrcMessage("PRIVMSG", ("#c", ":)"))),
        ("@novalue;k=v CMD", IrcMessage("CMD", (), {"novalue": "", "k": "v"})),
        ("CMD a b :c d  e", IrcMessage("CMD", ("a", "b", "c d  e"))),
        ("CMD a :", IrcMessage("CMD", ("a", ""))),
    ],
)
def test_parse_shapes(line: str, expected: IrcMessage | None) -> None:
    msg = parse_line(line)
    if expected is not None:
        assert msg == expected
    else:
        assert msg.command == "001"
        assert msg.params == ("justinfan1", "Welcome, GLHF!")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "@only-tags",
        ":prefix-only",
        "@a=b :prefix",
        "@=v CMD",
        ":nick!u@h",
        "12 too short numeric",
        "PRIV-MSG #c :x",
        "x" * 100_000,
    ],
)
def test_bad_lines_raise_decode_error(line: str) -> None:
    with pytest.raises(DecodeError):
        parse_line(line)


def test_privmsg_with_full_tags_and_bits() -> None:
    event = one(LINES[0])
    assert isinstance(event, ChatMessage)
    assert event.platform is Platform.TWITCH
    assert event.channel == "somestreamer"
    assert event.message_id == "3f2a9c1e-7b44-4d0e-9a51-0c6e2d8b7f10"
    assert event.user_id == "987654321"
    assert event.user_name == "NekoChan"
    assert event.roles == {Role.SUBSCRIBER}
    assert event.paid == Paid(100.0, "BITS", PaidKind.BITS)
    # The cheermote is blanked (same length, so emote offsets still hold).
    assert event.text == "         hi from a lurker"
    assert event.first_time is True
    assert event.platform_time == 1732500000.123
    assert event.received == NOW
    assert event.event is EventKind.CHAT


def test_roles_moderator_broadcaster_vip() -> None:
    mod = one(LINES[1])
    assert isinstance(mod, ChatMessage)
    assert mod.roles == {Role.MODERATOR}
    assert mod.first_time is False
    assert mod.paid is None
    broadcaster = one(LINES[2])
    assert isinstance(broadcaster, ChatMessage)
    assert broadcaster.roles == {Role.BROADCASTER}
    assert broadcaster.text == "waves"  # /me unwrapped
    vip = one(LINES[3])
    assert isinstance(vip, ChatMessage)
    assert vip.roles == {Role.VIP}


def test_emote_positions_are_code_points_after_emoji_and_cjk() -> None:
    event = one(LINES[3])
    assert isinstance(event, ChatMessage)
    assert event.text == "😀你好 Kappa!"
    assert event.emotes == ((4, 8),)
    # In code points "Kappa" sits at 4-8: one for the emoji, not two (UTF-16) or four (bytes).
    assert event.text[4 : 8 + 1] == "Kappa"
    mod = one(LINES[1])
    assert isinstance(mod, ChatMessage)
    assert mod.emotes == ((6, 10),)
    assert mod.text[6:11] == "Kappa"


def test_usernotice_resub_carries_user_text() -> None:
    event = one(LINES[4])
    assert isinstance(event, ChatMessage)
    assert event.event is EventKind.SUB
    assert event.text == "still here after 15 months"
    assert event.user_name == "Resubber"
    assert event.user_id == "888"
    assert event.message_id == "n-1"


def test_usernotice_raid() -> None:
    event = one(LINES[5])
    assert isinstance(event, ChatMessage)
    assert event.event is EventKind.RAID
    assert event.user_name == "RaiderTV"
    assert event.text == ""


def test_gifts_mass_gift_announced_once() -> None:
    mass = (
        "@display-name=Gifter;id=g-1;login=gifter;msg-id=submysterygift;"
        "msg-param-mass-gift-count=5;msg-param-community-gift-id=99;user-id=1 "
        ":tmi.twitch.tv USERNOTICE #c"
    )
    part = (
        "@display-name=Gifter;id=g-2;login=gifter;msg-id=subgift;"
        "msg-param-community-gift-id=99;user-id=1 :tmi.twitch.tv USERNOTICE #c"
    )
    single = (
        "@display-name=Gifter;id=g-3;login=gifter;msg-id=subgift;user-id=1 "
        ":tmi.twitch.tv USERNOTICE #c"
    )
    event = one(mass)
    assert isinstance(event, ChatMessage)
    assert event.event is EventKind.GIFT
    assert event.paid == Paid(5.0, "SUB_T1", PaidKind.GIFT)
    assert events_of(part) == []
    gift = one(single)
    assert isinstance(gift, ChatMessage)
    assert gift.paid == Paid(1.0, "SUB_T1", PaidKind.GIFT)


_PLANS = [
    ("Prime", SubTier.PRIME, "SUB_PRIME"),
    ("1000", SubTier.TIER1, "SUB_T1"),
    ("2000", SubTier.TIER2, "SUB_T2"),
    ("3000", SubTier.TIER3, "SUB_T3"),
]


def _sub_notice(kind: str, tags: str) -> str:
    return (
        f"@display-name=Subber;id=s-1;login=subber;msg-id={kind};{tags}"
        "room-id=1;user-id=5 :tmi.twitch.tv USERNOTICE #c :hype"
    )


@pytest.mark.parametrize(("plan", "tier", "currency"), _PLANS)
@pytest.mark.parametrize(
    ("kind", "extra", "event", "paid_kind", "amount"),
    [
        ("sub", "", EventKind.SUB, PaidKind.SUB, 1.0),
        ("resub", "msg-param-cumulative-months=15;", EventKind.SUB, PaidKind.SUB, 1.0),
        ("primepaidupgrade", "", EventKind.SUB, PaidKind.SUB, 1.0),
        ("subgift", "msg-param-recipient-id=6;", EventKind.GIFT, PaidKind.GIFT, 1.0),
        ("anonsubgift", "msg-param-recipient-id=6;", EventKind.GIFT, PaidKind.GIFT, 1.0),
        ("submysterygift", "msg-param-mass-gift-count=20;", EventKind.GIFT, PaidKind.GIFT, 20.0),
    ],
)
def test_sub_kinds_carry_their_tier_and_are_paid_per_tier(
    kind: str,
    extra: str,
    event: EventKind,
    paid_kind: PaidKind,
    amount: float,
    plan: str,
    tier: SubTier,
    currency: str,
) -> None:
    message = one(_sub_notice(kind, f"{extra}msg-param-sub-plan={plan};"))
    assert isinstance(message, ChatMessage)
    assert (message.event, message.sub_tier) == (event, tier)
    assert message.paid == Paid(amount, currency, paid_kind)
    assert message.text == "hype"


@pytest.mark.parametrize("plan_tag", ["", "msg-param-sub-plan=;", "msg-param-sub-plan=4000;"])
def test_sub_without_a_known_plan(plan_tag: str) -> None:
    sub = one(_sub_notice("sub", plan_tag))
    assert isinstance(sub, ChatMessage)
    assert (sub.event, sub.sub_tier, sub.paid) == (EventKind.SUB, None, None)
    # A gift is at least tier 1, whatever the tag says.
    gift = one(_sub_notice("subgift", plan_tag))
    assert isinstance(gift, ChatMessage)
    assert (gift.sub_tier, gift.paid) == (None, Paid(1.0, "SUB_T1", PaidKind.GIFT))


def test_sub_tier_only_on_sub_events() -> None:
    raid = one("@id=r;msg-id=raid;msg-param-sub-plan=3000;user-id=1 :tmi.twitch.tv USERNOTICE #c")
    assert isinstance(raid, ChatMessage)
    assert (raid.event, raid.sub_tier, raid.paid) == (EventKind.RAID, None, None)


def test_unknown_usernotice_ignored() -> None:
    line = "@id=x;msg-id=viewermilestone;user-id=1 :tmi.twitch.tv USERNOTICE #c"
    assert events_of(line) == []


def test_clearmsg_and_clearchat() -> None:
    assert one(LINES[6]) == Retraction(
        Platform.TWITCH,
        "somestreamer",
        message_ids=frozenset({"3f2a9c1e-7b44-4d0e-9a51-0c6e2d8b7f10"}),
    )
    assert one(LINES[7]) == Retraction(
        Platform.TWITCH, "somestreamer", user_id="987654321", reason="timeout", duration_s=600
    )
    assert one(LINES[8]) == Retraction(
        Platform.TWITCH, "somestreamer", user_id="987654321", reason="ban"
    )
    assert one(LINES[9]) == Retraction(Platform.TWITCH, "somestreamer", reason="chat_cleared")


@pytest.mark.parametrize(
    ("tags", "reason", "duration_s"),
    [
        ("ban-duration=600;", "timeout", 600),
        ("ban-duration=1;", "timeout", 1),
        ("ban-duration=1209600;", "timeout", 1_209_600),  # Twitch's longest: two weeks
        ("", "ban", None),
        ("ban-duration=²;", "timeout", None),  # not a number: still a timeout
        ("ban-duration=;", "timeout", None),
    ],
)
def test_clearchat_keeps_the_timeout_duration(
    tags: str, reason: str, duration_s: int | None
) -> None:
    event = one(f"@{tags}room-id=1;target-user-id=42 :tmi.twitch.tv CLEARCHAT #c :viewer")
    assert isinstance(event, Retraction)
    assert (event.user_id, event.reason, event.duration_s) == ("42", reason, duration_s)


def test_ping_reconnect_login_failure() -> None:
    assert one(LINES[10]) == codec.SendLine("PONG :tmi.twitch.tv\r\n")
    assert one(LINES[11]) == codec.ReconnectRequested()
    assert one(LINES[12]) == codec.LoginFailed("Login authentication failed")
    assert one("NOTICE * :Improperly formatted auth") == codec.LoginFailed(
        "Improperly formatted auth"
    )
    assert one("@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE #c :gone") == codec.Notice(
        "msg_channel_suspended", "gone"
    )


def test_welcome_join_pong() -> None:
    assert one(":tmi.twitch.tv 001 justinfan123 :Welcome, GLHF!") == codec.LoggedIn("justinfan123")
    own = ":justinfan123!justinfan123@justinfan123.tmi.twitch.tv JOIN #somestreamer"
    assert one(own) == codec.Joined("somestreamer")
    assert events_of(":other!other@other.tmi.twitch.tv JOIN #somestreamer") == []
    assert one(":tmi.twitch.tv PONG tmi.twitch.tv :abc") == codec.PongReceived("abc")
    assert events_of(":tmi.twitch.tv 376 justinfan123 :>") == []


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("@bits=lots;id=x :a!a@a PRIVMSG #c :hi", "bits is not a number"),
        (":a!a@a PRIVMSG #c :hi", "PRIVMSG without an id tag"),
        ("@id=x :a!a@a PRIVMSG c :hi", "PRIVMSG without a #channel"),
        ("@id=x :a!a@a PRIVMSG #c", "PRIVMSG without text"),
        (":tmi.twitch.tv CLEARMSG #c :x", "CLEARMSG without target-msg-id"),
        (":tmi.twitch.tv ROOMSTATE #c", "ROOMSTATE room-id is not a number: ''"),
        ("@room-id=12a :tmi.twitch.tv ROOMSTATE #c", "ROOMSTATE room-id is not a number"),
        ("@room-id=\u00b2 :tmi.twitch.tv ROOMSTATE #c", "ROOMSTATE room-id is not a number"),
        ("@room-id=1 :tmi.twitch.tv ROOMSTATE c", "ROOMSTATE without a #channel"),
    ],
)
def test_bad_mapping_is_a_decode_error(line: str, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        events_of(line)


def test_roomstate_gives_the_channel_s_room_id() -> None:
    # The full state on join, and a later change (slow mode) with the id again.
    full = (
        "@emote-only=0;followers-only=-1;r9k=0;room-id=71092938;slow=0;subs-only=0"
        " :tmi.twitch.tv ROOMSTATE #SomeStreamer"
    )
    assert one(full) == codec.RoomState("somestreamer", "71092938")
    assert one("@room-id=1;slow=10 :tmi.twitch.tv ROOMSTATE #c") == codec.RoomState("c", "1")


def test_malformed_emotes_ignored_message_kept() -> None:
    event = one("@id=x;emotes=25:a-b,3-1,,9/:;user-id=1 :a!a@a PRIVMSG #c :hello")
    assert isinstance(event, ChatMessage)
    assert event.emotes == ()


def test_shared_chat_from_partner_channel_is_not_read() -> None:
    relayed = "@id=x;room-id=1;source-room-id=2;user-id=9 :a!a@a PRIVMSG #c :from next door"
    own = "@id=y;room-id=1;source-room-id=1;user-id=9 :a!a@a PRIVMSG #c :from here"
    assert events_of(relayed) == []
    assert isinstance(one(own), ChatMessage)


def test_missing_display_name_falls_back_to_login() -> None:
    event = one("@id=x;display-name=;user-id=1 :lurker!lurker@lurker PRIVMSG #c :hi")
    assert isinstance(event, ChatMessage)
    assert event.user_name == "lurker"


STREAM = ("\r\n".join(LINES) + "\r\n").encode("utf-8")


def expected_stream_events() -> list[codec.TwitchEvent]:
    return [e for line in LINES for e in events_of(line)]


def test_several_lines_in_one_frame() -> None:
    assert TwitchCodec("justinfan123").feed(STREAM, NOW) == expected_stream_events()


def test_every_line_split_at_every_byte_boundary() -> None:
    expected = expected_stream_events()
    for line in LINES:
        data = (line + "\r\n").encode("utf-8")
        want = events_of(line)
        for cut in range(1, len(data)):
            dec = TwitchCodec("justinfan123")
            got = dec.feed_partial(data[:cut], NOW) + dec.feed_partial(data[cut:], NOW)
            assert got == want, (line[:40], cut)
    # And the whole stream cut into 7-byte frames.
    dec = TwitchCodec("justinfan123")
    got = []
    for i in range(0, len(STREAM), 7):
        got += dec.feed_partial(STREAM[i : i + 7], NOW)
    assert got == expected


def test_frame_without_final_crlf_is_a_whole_line() -> None:
    assert TwitchCodec("x").feed("PING :a\r\nPING :b", NOW) == [
        codec.SendLine("PONG :a\r\n"),
        codec.SendLine("PONG :b\r\n"),
    ]


def test_bad_lines_are_reported_and_next_line_still_parses() -> None:
    dec = TwitchCodec("x")
    data = (
        b"@broken-tags-no-command\r\n"
        b"\xff\xfe PRIVMSG #c :bad utf8\r\n"
        + b"@id=big :a!a@a PRIVMSG #c :"
        + b"x" * 100_000
        + b"\r\n\r\n"
        + b"PING :still-alive\r\n"
    )
    events = dec.feed(data, NOW)
    assert [type(e) for e in events] == [DecodeFailed, DecodeFailed, DecodeFailed, codec.SendLine]
    first, second, third, last = events
    assert isinstance(first, DecodeFailed) and "no command" in first.error
    assert isinstance(second, DecodeFailed) and "invalid UTF-8" in second.error
    assert isinstance(third, DecodeFailed) and "too long" in third.error
    assert last == codec.SendLine("PONG :still-alive\r\n")


def test_huge_line_across_frames_is_dropped_with_bounded_memory() -> None:
    splitter = LineSplitter()
    out = []
    for _ in range(20):
        out += splitter.feed(b"y" * 10_000)
    out += splitter.feed(b"tail\r\nPING :ok\r\n")
    assert [type(o) for o in out] == [DecodeError, str]
    assert out[-1] == "PING :ok"
    assert len(splitter._buf) == 0


def test_handshake_anonymous_and_authenticated() -> None:
    assert codec.handshake("justinfan4242", "", ["Chan", "other"]) == [
        "CAP REQ :twitch.tv/tags twitch.tv/commands\r\n",
        "NICK justinfan4242\r\n",
        "JOIN #chan,#other\r\n",
    ]
    assert codec.handshake("MyBot", "abc", ["c"])[1:3] == ["PASS oauth:abc\r\n", "NICK mybot\r\n"]
    assert codec.handshake("mybot", "oauth:abc", ["c"])[1] == "PASS oauth:abc\r\n"


@pytest.mark.parametrize(
    "line",
    [
        *codec.handshake("mybot", "oauth:x", ["a", "b"]),
        codec.pong("tmi.twitch.tv"),
        codec.ping("abc"),
        codec.privmsg("c", "hi\r\nthere", reply_to="id"),
    ],
)
def test_every_outgoing_line_ends_with_crlf(line: str) -> None:
    body, sep, rest = line.partition("\r\n")
    assert (sep, rest) == ("\r\n", "")
    assert "\r" not in body and "\n" not in body


def test_privmsg_is_one_safe_line() -> None:
    line = codec.privmsg("Chan", "status:\r\nPRIVMSG #x :injected " + "z" * 600, reply_to="id;1")
    assert line.endswith("\r\n")
    line = line.removesuffix("\r\n")
    assert "\r" not in line and "\n" not in line
    assert line.startswith("@reply-parent-msg-id=id\\:1 PRIVMSG #chan :status: PRIVMSG #x")
    assert len(parse_line(line).trailing) == codec.MAX_CHAT_CHARS


@given(st.binary(max_size=400))
@settings(max_examples=400)
def test_fuzz_bytes_only_decode_failures(data: bytes) -> None:
    events = TwitchCodec("x").feed(data, NOW)
    assert all(isinstance(e, codec.TwitchEvent) for e in events)


@given(st.text(max_size=300))
@settings(max_examples=400)
def test_fuzz_lines_parse_or_decode_error(line: str) -> None:
    try:
        msg = parse_line(line)
    except DecodeError:
        return
    with contextlib.suppress(DecodeError):
        to_events(msg, "x", NOW)


@given(
    tags=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "bits",
                "emotes",
                "badges",
                "user-id",
                "room-id",
                "msg-id",
                "tmi-sent-ts",
                "display-name",
                "target-msg-id",
                "target-user-id",
                "msg-param-mass-gift-count",
            ]
        ),
        st.text(max_size=30),
    ),
    command=st.sampled_from(["PRIVMSG", "USERNOTICE", "CLEARMSG", "CLEARCHAT", "NOTICE", "JOIN"]),
    params=st.lists(st.text(max_size=20), max_size=3),
)
def test_fuzz_structured_messages_only_decode_error(
    tags: dict[str, str], command: str, params: list[str]
) -> None:
    with contextlib.suppress(DecodeError):
        to_events(IrcMessage(command, tuple(params), tags, "a!a@a"), "x", NOW)


@pytest.mark.parametrize(
    "tags",
    [
        "tmi-sent-ts=²",  # str.isdigit() is true for it; int() refuses it
        "tmi-sent-ts=" + "9" * 5000,  # past int()'s 4300-digit limit
        "emotes=25:²-3",
        "emotes=25:0-" + "9" * 5000,
    ],
)
def test_odd_digits_in_number_tags_do_not_break_the_message(tags: str) -> None:
    event = one(f"@id=x;user-id=1;{tags} :a!a@a PRIVMSG #c :hi")
    assert isinstance(event, ChatMessage)
    assert (event.text, event.platform_time, event.emotes) == ("hi", 0.0, ())


def test_odd_digits_in_counts() -> None:
    with pytest.raises(DecodeError, match="bits is not a number"):
        events_of("@id=x;bits=²;user-id=1 :a!a@a PRIVMSG #c :hi")
    gift = one(
        "@id=g;msg-id=submysterygift;msg-param-mass-gift-count=³;user-id=1 "
        ":tmi.twitch.tv USERNOTICE #c"
    )
    assert isinstance(gift, ChatMessage) and gift.paid == Paid(1.0, "SUB_T1", PaidKind.GIFT)


def test_any_exception_a_line_provokes_costs_that_line_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_roles = codec._roles

    def buggy_roles(msg: IrcMessage) -> frozenset[Role]:
        if msg.tags.get("id") == "bad":
            raise RecursionError("maximum recursion depth exceeded")
        return real_roles(msg)

    monkeypatch.setattr(codec, "_roles", buggy_roles)
    events = TwitchCodec("x").feed(
        "@id=bad;user-id=1 :a!a@a PRIVMSG #c :one\r\n@id=good;user-id=1 :a!a@a PRIVMSG #c :two\r\n",
        NOW,
    )
    assert [type(e) for e in events] == [DecodeFailed, ChatMessage]
    failed, good = events
    assert isinstance(failed, DecodeFailed)
    assert failed.error == "unexpected RecursionError: maximum recursion depth exceeded"
    assert failed.excerpt.startswith("@id=bad;")
    assert isinstance(good, ChatMessage) and good.message_id == "good"


NUMBERS = st.text(alphabet="0123456789²³¹٣߁", max_size=6) | st.text(max_size=30)


@given(
    numbers=st.dictionaries(
        st.sampled_from(["bits", "tmi-sent-ts", "msg-param-mass-gift-count"]), NUMBERS
    ),
    emotes=st.lists(st.tuples(NUMBERS, NUMBERS), max_size=3),
    command=st.sampled_from(["PRIVMSG", "USERNOTICE"]),
)
@settings(max_examples=300)
def test_fuzz_number_tags_only_decode_error(
    numbers: dict[str, str], emotes: list[tuple[str, str]], command: str
) -> None:
    tags = {
        "id": "x",
        "msg-id": "submysterygift",
        "emotes": "1:" + ",".join(f"{a}-{b}" for a, b in emotes),
        **numbers,
    }
    with contextlib.suppress(DecodeError):
        to_events(IrcMessage(command, ("#c", "hi"), tags, "a!a@a"), "x", NOW)
