"""The engine's worker thread, its job queue and its watchdog.

All torch work happens on one dedicated thread. The asyncio side calls
`engine.stream(text, voice)` and iterates; leaving the iteration early (a
skip) stops the work at the next sampling step. A failed request logs
`engine.error` and raises `SynthesisError` to its caller; the engine stays up.

Speech for the air comes first: a preview (`stream(..., preview=True)`, the
panel's preview button) waits behind every on-air request, and on-air requests
that arrive while a preview runs are served between its sentences.

With `engine.batch.max_size` above 1 (a server speaking for many channels),
on-air requests that arrive together are served as one batch: the first one
waits at most `engine.batch.window_ms` for others to join, and requests that
arrive while a batch runs join it between two of its sentences. Previews are
never batched.

A watchdog thread guards against a synthesis that never returns (a wedged
driver, a pathological input): after `engine.stall_timeout_s` without a
sampling step it logs `engine.stalled`, fails that request (every request of
a stuck batch) with `SynthesisStalled`, and hands the job queue to a fresh
inference thread. The stuck thread is left to finish on its own (Python cannot
kill a thread); its output is discarded.

`Worker` is the engine's base: the engine (engine/synth.py) says how it starts
(`_start_up`), how it serves one job (`_run`) and how a batch of them
(`_run_batch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from engine.config import EngineConfig

log = structlog.get_logger()


#: Ranks in the job queue: on-air speech, then previews (FIFO within each), then
#: the stop marker.
ON_AIR, PREVIEW, _STOP = 0, 1, 2

#: Stuck inference threads tolerated before requests fail at once instead of
#: each waiting out its own stall (the engine needs a restart by then).
MAX_STUCK_THREADS = 3

#: The range of a request's `speed`: beyond it speech is no longer natural.
MIN_SPEED, MAX_SPEED = 0.5, 2.0


class SynthesisError(Exception):
    """One request failed (bad voice, bad text, out of memory…); the engine is fine."""


class SynthesisStalled(SynthesisError):
    """The request made no progress within `engine.stall_timeout_s` and was abandoned."""


@dataclass
class _Job:
    text: str
    voice: str
    loop: asyncio.AbstractEventLoop | None  # None: an internal job nobody awaits
    out: asyncio.Queue[np.ndarray | BaseException | None] | None
    cancel: threading.Event = field(default_factory=threading.Event)
    seed: int | None = None
    #: Monotonic time of the last sampling step; None until a thread takes the job.
    progress_at: float | None = None
    #: Set by the watchdog: whatever the stuck thread still produces is dropped.
    abandoned: bool = False
    chunks: int = 0  # audio chunks handed over so far
    preview: bool = False  # nobody hears it on air: it yields to those who will
    #: The request's pace, times the voice's own speed (1.3: said in 1/1.3 the time).
    speed: float = 1.0
    #: Sampling steps for this request; None: the voice's, else engine.nfe_steps.
    steps: int | None = None


class Worker:
    """The inference thread that serves the job queue, and the watchdog over it."""

    config: EngineConfig
    #: Where requests are served: here, in this process (an engine server's client
    #: says "up" or "unavailable").
    state = "local"

    def __init__(self) -> None:
        self.ready: Future[None] = Future()
        self.steps_run = 0  # sampling steps since start (tests watch cancellation with it)
        self.errors = 0  # failed requests since start (a metric)
        self.stalls = 0  # requests abandoned by the watchdog (a metric)
        self._jobs: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO among jobs of one rank
        self._thread = threading.Thread(target=self._main, name="ishowtts-engine", daemon=True)
        #: The thread serving jobs now; the watchdog replaces it when it sticks.
        self._worker = self._thread
        self._job: _Job | None = None  # the current worker's job
        #: The current worker's batched jobs (`engine.batch`), in the order they came.
        self._batch: list[_Job] = []
        self._replacements = itertools.count(1)  # names the watchdog's fresh threads
        self._stuck: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def _start_up(self) -> dict[str, Any]:
        """Load and warm up (on the inference thread); returns `engine.ready`'s fields."""
        raise NotImplementedError

    def _run(self, job: _Job) -> None:
        """Serve one job: its audio, then None, or its error, through `_emit`."""
        raise NotImplementedError

    def _run_batch(self, jobs: list[_Job]) -> None:
        """Serve on-air jobs together (admitted with `_admit`, more taken with
        `_take_on_air` while they run), each ended through `_emit` and `_release`."""
        raise NotImplementedError

    def _bind(self) -> None:
        """Ready the calling thread for torch work (the engine's current GPU)."""

    def start(self) -> None:
        self._thread.start()

    async def wait_ready(self) -> None:
        """Until the model is loaded (and warmed up); raises if loading failed."""
        await asyncio.wrap_future(self.ready)

    async def wait_available(self) -> None:
        """Until a request can be served: at once, in this process."""

    async def stream(
        self,
        text: str,
        voice: str,
        seed: int | None = None,
        *,
        preview: bool = False,
        speed: float = 1.0,
        steps: int | None = None,
    ) -> AsyncGenerator[np.ndarray, None]:
        """Audio for `text` in `voice`, one chunk per sentence as each is ready.
        A `preview` never delays speech on air: it waits behind it. `speed` scales
        the voice's own pace (a busy chat is read faster); `steps` overrides the
        sampling steps."""
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be within {MIN_SPEED}-{MAX_SPEED}, got {speed}")
        out: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue()
        job = _Job(
            text, voice, asyncio.get_running_loop(), out, seed=seed, preview=preview, speed=speed
        )
        job.steps = steps
        self._put(job)
        try:
            while True:
                item = await out.get()
                if item is None:
                    return
                if isinstance(item, SynthesisError):
                    raise item
                if isinstance(item, BaseException):
                    raise SynthesisError(str(item)) from item
                yield item
        finally:
            job.cancel.set()

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the current sampling step; waits at most `timeout` seconds for
        it (the thread is a daemon: a step that takes longer ends with the process)."""
        self._closing.set()
        self._put(None)
        worker = self._worker
        if worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout=timeout)

    def _put(self, job: _Job | None) -> None:
        rank = _STOP if job is None else PREVIEW if job.preview else ON_AIR
        self._jobs.put((rank, next(self._order), job))

    @property
    def _batching(self) -> bool:
        return self.config.batch.max_size > 1

    # inference thread ---------------------------------------------------------
    def _main(self) -> None:
        try:
            log.info("engine.ready", **self._start_up())
            self.ready.set_result(None)
        except BaseException as exc:
            self.ready.set_exception(exc)
            return
        threading.Thread(target=self._watch, name="ishowtts-engine-watchdog", daemon=True).start()
        self._serve()

    def _serve(self) -> None:
        """Take jobs until closed, or until the watchdog hands the queue to another thread."""
        self._bind()
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._worker is not me:
                    return
            rank, _, job = self._jobs.get()
            if job is None:
                return
            if rank == ON_AIR:
                self._serve_on_air(job)
            else:
                self._serve_one(job)

    def _serve_on_air(self, job: _Job) -> None:
        if self._batching:
            self._serve_batch(job)
        else:
            self._serve_one(job)

    def _serve_one(self, job: _Job) -> None:
        with self._lock:
            job.progress_at = time.monotonic()
            self._job = job
            stuck = sum(t.is_alive() for t in self._stuck)
        if stuck >= MAX_STUCK_THREADS:
            self._fail_stuck(job, stuck)
        else:
            self._run(job)
        with self._lock:
            if self._job is job:
                self._job = None

    def _fail_stuck(self, job: _Job, stuck: int) -> None:
        self.errors += 1
        log.error("engine.error", voice=job.voice, text_len=len(job.text), error="stuck")
        self._emit(job, SynthesisError(f"the engine is stuck ({stuck} syntheses hung)"))

    def _serve_batch(self, first: _Job) -> None:
        with self._lock:
            # A preview paused for this batch is not watched while the batch runs.
            self._job = None
        self._run_batch(self._gather(first))

    def _gather(self, first: _Job) -> list[_Job]:
        """`first` and the on-air jobs that come within `engine.batch.window_ms` of
        taking it, up to `engine.batch.max_size`: the wait ends at the window's
        end or when the batch is full, whichever is first."""
        batch = self.config.batch
        started = time.monotonic()
        deadline = started + batch.window_ms / 1000
        jobs = [first]
        while len(jobs) < batch.max_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                entry = self._jobs.get(timeout=remaining)
            except queue.Empty:
                break
            rank, _, job = entry
            if rank != ON_AIR or job is None:
                self._jobs.put(entry)  # same rank and number: it keeps its place
                break
            jobs.append(job)
        log.debug(
            "engine.gathered",
            jobs=len(jobs),
            waited_ms=round((time.monotonic() - started) * 1000, 3),
            window_ms=batch.window_ms,
        )
        return jobs

    def _take_on_air(self, limit: int) -> list[_Job]:
        """Up to `limit` on-air jobs waiting now, without waiting for more; none
        for a thread the watchdog replaced, or once the engine is closing."""
        jobs: list[_Job] = []
        with self._lock:
            if self._worker is not threading.current_thread() or self._closing.is_set():
                return jobs
            while len(jobs) < limit:
                try:
                    entry = self._jobs.get_nowait()
                except queue.Empty:
                    break
                rank, _, job = entry
                if rank != ON_AIR or job is None:
                    self._jobs.put(entry)
                    break
                jobs.append(job)
        return jobs

    def _admit(self, job: _Job) -> bool:
        """Take `job` into the running batch, where the watchdog sees it; False
        where it failed at once instead (too many stuck threads)."""
        with self._lock:
            if self._worker is not threading.current_thread():
                self._put(job)  # for the thread that serves the queue now
                return False
            job.progress_at = time.monotonic()
            stuck = sum(t.is_alive() for t in self._stuck)
            if stuck < MAX_STUCK_THREADS:
                self._batch.append(job)
                return True
        self._fail_stuck(job, stuck)
        return False

    def _release(self, job: _Job) -> None:
        """`job` has ended: out of the running batch."""
        with self._lock:
            if job in self._batch:
                self._batch.remove(job)

    def _serving(self) -> bool:
        """Whether the calling thread still serves the queue (the watchdog may
        have handed it to a fresh one)."""
        with self._lock:
            return self._worker is threading.current_thread()

    def _serve_on_air_first(self, preview: _Job) -> None:
        """Between a preview's sentences: serve the on-air requests waiting behind it,
        so a long preview delays speech on air by one sentence at most."""
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._worker is not me or preview.abandoned:
                    return
            try:
                entry = self._jobs.get_nowait()
            except queue.Empty:
                return
            rank, _, job = entry
            if rank != ON_AIR or job is None:
                self._jobs.put(entry)  # same rank and number: it keeps its place
                return
            self._serve_on_air(job)
            with self._lock:
                if self._worker is not me:
                    # That request stuck and a fresh thread took the queue: the
                    # preview ends here, its caller told why.
                    preview.abandoned = True
                    preview.cancel.set()
                    _deliver(preview, SynthesisStalled("the engine stalled during a preview"))
                    return
                preview.progress_at = time.monotonic()
                self._job = preview

    def _watch(self) -> None:
        limit = self.config.stall_timeout_s
        while not self._closing.wait(min(1.0, limit / 4)):
            with self._lock:
                jobs = ([self._job] if self._job is not None else []) + self._batch
                times = [job.progress_at for job in jobs if job.progress_at is not None]
                if not times:
                    continue
                idle = time.monotonic() - max(times)
                if idle >= limit:
                    self._abandon(jobs, idle)

    def _abandon(self, jobs: list[_Job], idle: float) -> None:
        """Fail the stuck requests (one, or a batch) and start a fresh thread on the
        queue (lock held)."""
        self._stuck = [t for t in self._stuck if t.is_alive()]
        self._stuck.append(self._worker)
        for job in jobs:
            job.abandoned = True
            job.cancel.set()
            self.errors += 1
            self.stalls += 1
            log.error(
                "engine.stalled",
                voice=job.voice,
                text_len=len(job.text),
                stalled_s=round(idle, 1),
                stuck_threads=len(self._stuck),
            )
            _deliver(job, SynthesisStalled(f"no progress for {idle:.0f} s; request abandoned"))
        self._job = None
        self._batch = []
        self._worker = threading.Thread(
            target=self._serve, name=f"ishowtts-engine-{next(self._replacements)}", daemon=True
        )
        self._worker.start()

    def _emit(self, job: _Job, item: np.ndarray | BaseException | None) -> None:
        with self._lock:
            if job.abandoned:
                return
            job.progress_at = time.monotonic()
            _deliver(job, item)


def _deliver(job: _Job, item: np.ndarray | BaseException | None) -> None:
    """Hand an item to the request's event loop (gone if the bot is shutting down)."""
    if job.loop is None or job.out is None:
        return
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(job.out.put_nowait, item)
