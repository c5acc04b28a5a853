"""The `ishowtts` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import yaml

from bot.config import (
    DEFAULT_CONFIG_PATH,
    CommandLine,
    Config,
    ConfigError,
    load_config,
    with_serve_address,
)
from bot.logs import configure_logging, flush_logs, tell_user
from engine.voices import VoiceError, VoiceLibrary

EXIT_CONFIG = 2
CONFIG_HELP = "config file (default: config/ishowtts.yaml where it exists, else the defaults)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ishowtts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="connect to chat and read it aloud")
    run.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    run.add_argument(
        "--twitch",
        action="append",
        default=[],
        metavar="CHANNEL",
        help="read this Twitch channel's chat (repeat for more channels)",
    )
    run.add_argument(
        "--bilibili",
        type=int,
        default=None,
        metavar="ROOM_ID",
        help="read this Bilibili room's danmaku (the number in live.bilibili.com/ROOM_ID)",
    )
    check = sub.add_parser(
        "check-config", help="validate a config and warn about what would stop `run`"
    )
    check.add_argument("path", nargs="?", type=Path, default=None, help=CONFIG_HELP)
    check.add_argument("--show", action="store_true", help="print every setting, secrets masked")
    voices = sub.add_parser("voices", help="list the voice library and check each voice")
    voices.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    say = sub.add_parser("say", help="synthesise text to a WAV file")
    say.add_argument("text")
    say.add_argument("--voice", help="voice name (default: engine.default_voice)")
    say.add_argument("--out", type=Path, default=Path("out.wav"))
    say.add_argument("--seed", type=int, default=None, help="fixed seed, repeatable output")
    say.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    serve = sub.add_parser(
        "serve", help="run the speech engine as a service for bots on other machines"
    )
    serve.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    serve.add_argument("--host", help="address to listen on (default: serve.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: serve.port)")
    serve.add_argument(
        "--ray",
        action="store_true",
        help="serve through Ray Serve, one replica per GPU (serve.ray; pip install .[serve])",
    )
    sub.add_parser("devices", help="list audio output devices")
    rewards = sub.add_parser(
        "rewards", help="how to map Twitch channel-point rewards, and the rewards mapped"
    )
    rewards.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    args = parser.parse_args(argv)

    match args.command:
        case "run":
            return _run(args.config, CommandLine(tuple(args.twitch), args.bilibili))
        case "check-config":
            return _check_config(args.path, args.show)
        case "voices":
            return _voices(args.config)
        case "say":
            return _say(args.config, args.text, args.voice, args.out, args.seed)
        case "serve":
            return _serve(args.config, args.host, args.port, args.ray)
        case "devices":
            return _devices()
        case "rewards":
            return _rewards(args.config)
    raise AssertionError(args.command)


def _load(path: Path | None, command_line: CommandLine | None = None) -> Config | None:
    """The config at `path`; without one, config/ishowtts.yaml where it exists, else
    the defaults (which are the shipped file's)."""
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    try:
        return load_config(path, command_line=command_line or CommandLine())
    except ConfigError as exc:
        tell_user(str(exc))
        return None


def _run(path: Path | None, command_line: CommandLine) -> int:
    config = _load(path, command_line)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    from bot.app import run_bot

    return asyncio.run(run_bot(config))


def _serve(path: Path | None, host: str | None, port: int | None, ray: bool = False) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    given = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if given:
        try:
            config = with_serve_address(config, **given)
        except ConfigError as exc:
            tell_user(str(exc))
            return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    if ray:
        from bot.ray_serve import serve_on_ray

        return asyncio.run(serve_on_ray(config))
    from bot.serve import serve_engine

    return asyncio.run(serve_engine(config))


def _check_config(path: Path | None, show: bool) -> int:
    """0: `run` would start; 1: it would refuse (each reason a warning line); 2: invalid."""
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    # Device probing logs (ALSA's chatter) stay out of the report.
    configure_logging("error", config.logging.format)
    source = path or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else "(defaults)")
    print(f"# {source}: valid")
    if show:
        # JSON mode masks SecretStr values as '**********'.
        effective = config.model_dump(mode="json")
        print(yaml.safe_dump(effective, sort_keys=False, allow_unicode=True), end="")
    from bot.app import NO_PLATFORM, start_up_problems
    from bot.instance import AlreadyRunning, bind_panel

    refused = start_up_problems(config, VoiceLibrary(config.engine.voices_dir))
    if config.web.enabled:
        try:
            bind_panel(config.web).close()
        except (AlreadyRunning, OSError) as exc:
            refused.append(str(exc))
    for warning in refused:
        print(f"warning: {warning}")
    for note in reward_voice_problems(config, VoiceLibrary(config.engine.voices_dir)):
        print(f"warning: {note}")
    if not (config.platforms.twitch.enabled or config.platforms.bilibili.enabled):
        print(f"warning: {NO_PLATFORM}")
    if refused:
        print("`ishowtts run` would refuse to start until the warnings above are fixed")
        return 1
    if not show:
        print("(--show prints every setting the bot would use)")
    return 0


REWARDS_HOW_TO = """\
Twitch tells a chat reader only a reward's id, never its title. To find an id:
  1. In your Twitch dashboard, give the reward "Require Viewer to Enter Text"
     (only such rewards reach chat; "Highlight My Message" does too).
  2. Run the bot (`ishowtts run`) and redeem the reward once, with any text.
  3. The panel's "Channel-point rewards" list shows it (with a Copy button), and
     the log has a `twitch.reward_seen` line with its reward_id.
  4. Map it in your config, then restart:
       platforms:
         twitch:
           rewards:
             tts:                      # any name you like
               id: PASTE-THE-ID-HERE
               voice: mei              # optional: read in this voice
               priority: 3             # optional: read before chat
With policy.read_mode: reward (or `!tts mode reward`), only mapped rewards (and
subs, bits, gifts) are read. Refunds of skipped redemptions are not made: they
need the broadcaster's own token and a reward created by our app."""


def reward_voice_problems(config: Config, voices: VoiceLibrary) -> list[str]:
    """Mapped rewards whose voice is not in the library (read in the current voice)."""
    known = set(voices.names())
    return [
        f"platforms.twitch.rewards.{name}: voice {rule.voice!r} is not in "
        f"{voices.directory} (its lines would use the current voice)"
        for name, rule in config.platforms.twitch.rewards.items()
        if rule.voice is not None and rule.voice not in known
    ]


def _rewards(path: Path | None) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    print(REWARDS_HOW_TO)
    mapped = config.platforms.twitch.reward_rules()
    print()
    if not mapped:
        print("No rewards are mapped yet (platforms.twitch.rewards is empty).")
        return 0
    print("Mapped rewards:")
    for reward_id, (name, rule) in mapped.items():
        what = "read" if rule.read else "not read"
        extras = [f"voice {rule.voice}"] if rule.voice else []
        extras += [f"priority {rule.priority}"] if rule.priority is not None else []
        extras += [f"template {rule.template!r}"] if rule.template else []
        label = name if name.lower() == reward_id else f"{name} ({reward_id})"
        print(f"  {label}: {', '.join([what, *extras])}")
    problems = reward_voice_problems(config, VoiceLibrary(config.engine.voices_dir))
    for note in problems:
        print(f"warning: {note}")
    return 1 if problems else 0


def _voices(path: Path | None) -> int:
    from bot.app import default_voice

    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    library = VoiceLibrary(config.engine.voices_dir)
    try:
        chosen: str | None = default_voice(config, library)[0]
    except VoiceError:
        chosen = None  # flagged on its own line below, or missing altogether
    own = library.user_names()
    bad = 0
    for name in library.names():
        default = " (default)" if name == chosen else ""
        builtin = "" if name in own else " (built-in, from the f5-tts package)"
        try:
            voice = library.get(name)
        except VoiceError as exc:
            bad += 1
            print(f"{name}{default}  INVALID: {exc}")
            continue
        trimmed = f", trimmed from {voice.trimmed_from_s:.1f} s" if voice.trimmed_from_s else ""
        print(f'{name}{default}{builtin}  {voice.seconds:.1f} s{trimmed}  "{voice.text}"')
    if not own:
        print(f"no voices of your own in {library.directory} yet (add NAME.wav and NAME.txt)")
    return 1 if bad else 0


def _say(path: Path, text: str, voice: str | None, out: Path, seed: int | None) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    if config.engine.url is not None:
        return _say_remote(config, text, voice, out, seed)

    from bot.app import default_voice
    from engine.checkpoints import CheckpointError, resolve_files
    from engine.synth import Engine, SynthesisError

    library = VoiceLibrary(config.engine.voices_dir)
    try:
        # A mistyped voice is told at once, not after the model has loaded (or
        # downloaded: 1.4 GB on a first run).
        if voice:
            library.get(voice)
            name = voice
        else:
            name, why = default_voice(config, library)
            if why is not None:
                tell_user(why)
    except VoiceError as exc:
        tell_user(f"voice error: {exc}")
        return EXIT_CONFIG
    try:
        files = resolve_files(config.engine)
    except CheckpointError as exc:
        tell_user(f"engine error: {exc}")
        return EXIT_CONFIG
    engine = Engine(config.engine, library, files)

    async def synthesise() -> list[np.ndarray]:
        await engine.wait_ready()
        return await _timed(engine.stream(text, name, seed))

    engine.start()
    try:
        chunks = asyncio.run(synthesise())
    except (CheckpointError, SynthesisError) as exc:
        tell_user(f"engine error: {exc}")
        return 1
    finally:
        engine.close()
    return _write_wav(out, chunks)


def _say_remote(config: Config, text: str, voice: str | None, out: Path, seed: int | None) -> int:
    """`say` through the engine server at engine.url (no model loaded here)."""
    from bot.remote_engine import EngineRefused, EngineUnavailable, RemoteEngine
    from engine.worker import SynthesisError

    async def synthesise() -> list[np.ndarray] | int:
        engine = RemoteEngine(config.engine)
        engine.start()
        try:
            async with asyncio.timeout(30):
                await engine.wait_ready()
            try:
                name = voice or engine.voices.choose_default(config.engine.default_voice)[0]
            except VoiceError as exc:
                tell_user(f"voice error: {exc}")
                return EXIT_CONFIG
            if name not in engine.voices.names():
                have = ", ".join(engine.voices.names()) or "none"
                tell_user(f"voice error: no voice {name!r} on the engine server (have: {have})")
                return EXIT_CONFIG
            return await _timed(engine.stream(text, name, seed))
        except TimeoutError:
            raise EngineUnavailable(f"no answer from {engine.url} within 30 s") from None
        finally:
            await engine.aclose()

    try:
        chunks = asyncio.run(synthesise())
    except (EngineRefused, SynthesisError) as exc:
        tell_user(f"engine error: {exc}")
        return 1
    return chunks if isinstance(chunks, int) else _write_wav(out, chunks)


async def _timed(stream: AsyncIterator[np.ndarray]) -> list[np.ndarray]:
    """A whole synthesis, and a line saying how fast it was."""
    from engine.audio import SAMPLE_RATE

    started = time.perf_counter()
    chunks = [c async for c in stream]
    elapsed = time.perf_counter() - started
    seconds = sum(len(c) for c in chunks) / SAMPLE_RATE
    rtf = elapsed / seconds if seconds else 0.0
    print(f"{seconds:.2f} s of audio in {elapsed:.2f} s (real-time factor {rtf:.3f})")
    return chunks


def _write_wav(out: Path, chunks: list[np.ndarray]) -> int:
    import soundfile as sf

    from engine.audio import SAMPLE_RATE

    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    sf.write(str(out), audio, SAMPLE_RATE, subtype="FLOAT")
    print(f"wrote {out}")
    return 0


def _devices() -> int:
    try:
        import sounddevice as sd
    except OSError as exc:
        tell_user(
            f"audio error: PortAudio is not available ({exc}); "
            "install it (Debian/Ubuntu: apt-get install libportaudio2)"
        )
        return 1
    devices = sd.query_devices()
    default_out = sd.default.device[1]
    outputs = [(i, d) for i, d in enumerate(devices) if d["max_output_channels"] > 0]
    if not outputs:
        print("no audio output devices found")
        return 1
    for index, dev in outputs:
        mark = "*" if index == default_out else " "
        api = sd.query_hostapis(dev["hostapi"])["name"]
        print(
            f"{mark} {index:3d}  {dev['name']}  ({api}, {dev['max_output_channels']} ch, "
            f"{dev['default_samplerate']:.0f} Hz)"
        )
    print("* = system default. Put the name or index in audio.output_device.")
    return 0


def console_main() -> NoReturn:
    """The `ishowtts` command. Once the command is done (devices closed, logs
    written), the process ends without the interpreter's teardown of torch's
    modules, which takes seconds and would hold up a stop with nothing left to do."""
    code = main()
    flush_logs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
