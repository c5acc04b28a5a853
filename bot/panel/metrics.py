"""Prometheus metrics, collected from the parts that own the numbers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from adapters.events import ChatMessage
from bot.chat import outcomes
from bot.chat.queue import SpeechQueue
from bot.control import Control
from bot.lag import LagProbe

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(
        self,
        queue: SpeechQueue,
        control: Control,
        engine: Any = None,
        lag: LagProbe | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "ishowtts_messages",
            "Chat messages by terminal outcome and platform",
            ["outcome", "platform"],
            registry=self.registry,
        )
        self.ttfa = Histogram(
            "ishowtts_ttfa_seconds",
            "From a message's arrival to its first sample handed to the device",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.rtf = Histogram(
            "ishowtts_real_time_factor",
            "Synthesis time divided by audio length",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self._state = _StateCollector(queue, control, engine, lag)
        self.registry.register(self._state)
        outcomes.add_listener(self._outcome)

    def attach_engine(self, engine: Any) -> None:
        """The engine, once warm (the panel serves from the start)."""
        self._state.engine = engine

    def close(self) -> None:
        outcomes.remove_listener(self._outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _outcome(self, event: str, message: ChatMessage, fields: dict[str, Any]) -> None:
        self.messages.labels(event.removeprefix("tts."), message.platform.value).inc()
        if event == outcomes.SPOKEN:
            if fields.get("ttfa_ms") is not None:
                self.ttfa.observe(fields["ttfa_ms"] / 1000)
            audio_s, synth_s = fields.get("audio_s") or 0, fields.get("synth_s")
            if audio_s and synth_s is not None:
                self.rtf.observe(synth_s / audio_s)


class _StateCollector(Collector):
    """Gauges read at scrape time from their owners, so they cannot drift."""

    def __init__(
        self, queue: SpeechQueue, control: Control, engine: Any, lag: LagProbe | None
    ) -> None:
        self._queue = queue
        self._control = control
        self.engine = engine
        self._lag = lag

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("ishowtts_queue_depth", "Messages waiting to be read")
        depth.add_metric([], len(self._queue))
        yield depth
        connected = GaugeMetricFamily(
            "ishowtts_adapter_connected", "1 while a platform is connected", labels=["platform"]
        )
        reconnects = CounterMetricFamily(
            "ishowtts_adapter_disconnects", "Connections lost, per platform", labels=["platform"]
        )
        for platform, up in self._control.connections.items():
            connected.add_metric([platform.value], 1.0 if up else 0.0)
        crashes = CounterMetricFamily(
            "ishowtts_adapter_crashes",
            "Adapter tasks that crashed and were restarted, per platform",
            labels=["platform"],
        )
        for platform, count in self._control.disconnects.items():
            reconnects.add_metric([platform.value], count)
        for platform, count in self._control.crashes.items():
            crashes.add_metric([platform.value], count)
        yield connected
        yield reconnects
        yield crashes
        errors = CounterMetricFamily("ishowtts_engine_errors", "Synthesis requests that failed")
        errors.add_metric([], getattr(self.engine, "errors", 0))
        yield errors
        stalls = CounterMetricFamily(
            "ishowtts_engine_stalls", "Syntheses abandoned for making no progress"
        )
        stalls.add_metric([], getattr(self.engine, "stalls", 0))
        yield stalls
        engine_up = GaugeMetricFamily(
            "ishowtts_engine_up",
            "1 while the engine can take requests (always, in this process; an engine "
            "server while it is connected)",
        )
        down = getattr(self.engine, "state", "local") == "unavailable"
        engine_up.add_metric([], 0.0 if down else 1.0)
        yield engine_up
        if self._lag is not None:
            lag = GaugeMetricFamily(
                "ishowtts_loop_lag_seconds",
                "Event-loop wake-up lateness since start, by quantile",
                labels=["quantile"],
            )
            for q in (50, 99, 100):
                value = self._lag.total.percentile(q) if q < 100 else self._lag.total.max_ms
                lag.add_metric([str(q / 100)], value / 1000)
            yield lag
