"""The `ishowtts` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from bot.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from bot.logs import configure_logging
from engine.voices import discover_voices

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ishowtts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="connect to chat and read it aloud")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    check = sub.add_parser("check-config", help="validate a config and print it, secrets masked")
    check.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG_PATH)
    voices = sub.add_parser("voices", help="list the voice library")
    voices.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    sub.add_parser("devices", help="list audio output devices")
    args = parser.parse_args(argv)

    match args.command:
        case "run":
            return _run(args.config)
        case "check-config":
            return _check_config(args.path)
        case "voices":
            return _voices(args.config)
        case "devices":
            return _devices()
    raise AssertionError(args.command)


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _run(path: Path) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    from bot.app import run_bot

    return asyncio.run(run_bot(config))


def _check_config(path: Path) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    # JSON mode masks SecretStr values as '**********'.
    effective = config.model_dump(mode="json")
    print(f"# {path}: OK")
    print(yaml.safe_dump(effective, sort_keys=False, allow_unicode=True), end="")
    return 0


def _voices(path: Path) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    directory = config.engine.voices_dir
    found = discover_voices(directory)
    if not found:
        print(f"no voices in {directory}/ (add NAME.wav and NAME.txt; see README)")
        return 0
    for voice in found:
        notes = []
        if not voice.transcript.is_file():
            notes.append(f"missing transcript {voice.transcript.name}")
        if voice.name == config.engine.default_voice:
            notes.append("default")
        suffix = f"  ({'; '.join(notes)})" if notes else ""
        print(f"{voice.name}  {voice.audio.name}{suffix}")
    print("(clips are checked in full once the speech engine is installed)")
    return 0


def _devices() -> int:
    try:
        import sounddevice as sd
    except OSError as exc:
        print(
            f"audio error: PortAudio is not available ({exc}); "
            "install it (Debian/Ubuntu: apt-get install libportaudio2)",
            file=sys.stderr,
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


if __name__ == "__main__":
    sys.exit(main())
