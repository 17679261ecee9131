"""What the Durable backend's queues make a message wait in Azure, re-enacted on the local host
(`TOWER_LOCAL_LATENCY`): the cost of a hop, so that makespan measured here transfers to Azure.

The local engine hands a message over in about a millisecond. In Azure a message waits for the
backend to deliver it, and the wait depends on the backend:

- ``azure-storage`` (DurableTask.AzureStorage). Each control queue (``partitionCount`` of them,
  an instance's queue being FNV-1a(instance id) mod partitionCount, `GetControlQueueAsync`) and the
  work-item queue is read by a listener that polls; while a queue is empty the wait between polls
  backs off from 50 ms (TaskHubQueue's minPollingDelay) to ``maxQueuePollingInterval``, each step
  adding 50 ms x 2^(n-1) x a random factor in [0.8, 1.2] (BackoffPollingHelper's
  RandomizedExponentialBackoffStrategy), and a poll that finds messages starts over at 50 ms
  (ControlQueue.GetMessagesAsync resets the helper). Sending a message wakes the sender's own
  listener of that queue at once (TaskHubQueue.AddMessageAsync calls backoffHelper.Reset): so a
  message sent by the worker that owns the queue is read at once, while a durable timer (a message
  made visible at its fire time) and a message from another worker wait for the next poll. With
  one worker (a quiet night on one instance) that is what costs: every timer fires up to
  ``maxQueuePollingInterval`` late. With ``TOWER_LOCAL_LATENCY_WORKERS`` = N, a control-queue
  message comes from another worker with probability 1 - 1/N (seeded), and waits too.
- ``durable-task-scheduler``: work items are pushed to the worker over a gRPC stream, no polling:
  every hop costs a constant push delay (tens of milliseconds; an estimate, the service publishes
  no figure).

On top of the wait, every hop costs one round trip (`HOP_SECONDS`: an estimate of a queue add and
get plus the history read of the episode, not a published figure). Activity dispatch is always one
hop: the orchestrator's worker sends the work item and its own work-item listener wakes.

The parameters come from host.json (``extensions.durableTask.storageProvider``), so changing
host.json changes the model; every duration is multiplied by `scale` (a simulated run's
``--time-scale``), so a 2-hour night runs in seconds with the same ratios.

The model counts what Azure bills or throttles: queue messages, polls (each a storage
transaction), and storage transactions roughly (a message costs an add, a get and a delete; a
poll one get; an episode a history read and write): see `Latency.counts`.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from tower.errors import EngineError

NONE, AZURE_STORAGE, DURABLE_TASK_SCHEDULER = "none", "azure-storage", "durable-task-scheduler"
PROFILES = (NONE, AZURE_STORAGE, DURABLE_TASK_SCHEDULER)

MIN_POLL_SECONDS = 0.05          # TaskHubQueue: minPollingDelay
RANDOMIZATION = 0.2              # RandomizedExponentialBackoffStrategy.RandomizationFactor
DEFAULT_MAX_POLL_SECONDS = 30.0  # AzureStorageOrchestrationServiceSettings.MaxQueuePollingInterval
DEFAULT_PARTITIONS = 4           # AzureStorageOrchestrationServiceSettings.PartitionCount
HOP_SECONDS = {AZURE_STORAGE: 0.05, DURABLE_TASK_SCHEDULER: 0.03}   # estimates, see the docstring
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
WORK_ITEMS = "workitems"


def fnv1a(text: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes (DurableTask.AzureStorage's Fnv1aHashHelper)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def partition_of(instance_id: str, partitions: int) -> int:
    """The control queue an instance's messages go to."""
    return fnv1a(instance_id) % partitions


def _timespan_seconds(text: str, where: str) -> float:
    """host.json's TimeSpan "hh:mm:ss[.fff]" (or "d.hh:mm:ss") in seconds."""
    try:
        head, minutes, seconds = text.split(":")
        days, _, hours = head.rpartition(".")
        return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (ValueError, AttributeError):
        raise EngineError(f"{where}: {text!r} is not a TimeSpan; write hh:mm:ss, e.g. \"00:00:05\"") from None


def storage_settings(host_json: Path = HOST_JSON) -> tuple[float, int]:
    """(maxQueuePollingInterval seconds, partitionCount) from host.json, Azure's defaults when unset."""
    try:
        host = json.loads(Path(host_json).read_text())
    except OSError:
        return DEFAULT_MAX_POLL_SECONDS, DEFAULT_PARTITIONS
    except ValueError as exc:
        raise EngineError(f"{host_json}: not valid JSON ({exc})") from None
    provider = host.get("extensions", {}).get("durableTask", {}).get("storageProvider", {})
    span = provider.get("maxQueuePollingInterval")
    longest = (_timespan_seconds(span, f"{host_json}: maxQueuePollingInterval") if span is not None
               else DEFAULT_MAX_POLL_SECONDS)
    partitions = provider.get("partitionCount", DEFAULT_PARTITIONS)
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= 16:
        raise EngineError(f"{host_json}: partitionCount must be an integer from 1 to 16, got {partitions!r}")
    return max(longest, MIN_POLL_SECONDS), partitions


class QueueListener:
    """One queue's listener on one worker: when does it poll next, and how often has it polled."""

    def __init__(self, shortest: float, longest: float, rng: random.Random, now: float):
        self.shortest, self.longest, self.rng = shortest, longest, rng
        self.last = now              # the last poll
        self.interval = 0.0          # wait after it (the strategy starts at zero)
        self.exponent = 0
        self.polls = 0

    def _back_off(self) -> None:
        if self.interval == self.longest:
            return
        step = self.shortest
        if self.exponent > 0:
            step += self.rng.uniform(1 - RANDOMIZATION, 1 + RANDOMIZATION) * 2 ** (self.exponent - 1) * self.shortest
        if step < self.longest:
            self.interval, self.exponent = step, self.exponent + 1
        else:
            self.interval = self.longest

    def _reset(self, at: float) -> None:
        self.last, self.interval, self.exponent = at, self.shortest, 1
        self.polls += 1

    def idle_until(self, now: float) -> None:
        """Empty polls up to `now` (none found a message)."""
        while self.last + self.interval <= now:
            self.last += self.interval
            self.polls += 1
            self._back_off()

    def wake(self, at: float) -> None:
        """A send on this worker: the listener polls at once (its wait is interrupted)."""
        self.idle_until(at)
        self._reset(max(at, self.last))

    def receive(self, visible: float) -> float:
        """When a message visible from `visible` is read: at the first poll at or after it."""
        if visible <= self.last:
            return self.last
        self.idle_until(visible - 1e-12)
        at = self.last + self.interval
        self._reset(at)
        return at


@dataclass
class Counts:
    queue_messages: int = 0
    polls: int = 0
    episodes: int = 0

    @property
    def storage_transactions(self) -> int:
        return 3 * self.queue_messages + self.polls + 2 * self.episodes


class Latency:
    """A backend profile's delivery delays, in seconds of the wall clock. Used by the engine's work
    loop thread only (activity results are modelled when the loop reads them)."""

    def __init__(self, profile: str, *, scale: float = 1.0, host_json: Path = HOST_JSON, workers: int = 1,
                 seed: int = 0, now: float = 0.0):
        if profile not in PROFILES or profile == NONE:
            raise EngineError(f"latency profile {profile!r}: use one of {', '.join(PROFILES[1:])}")
        if not scale > 0:
            raise EngineError(f"latency scale must be > 0, got {scale!r}")
        self.profile, self.scale, self.workers = profile, float(scale), max(int(workers), 1)
        self.longest, self.partitions = storage_settings(host_json)
        self.hop = HOP_SECONDS[profile] * self.scale
        self.rng = random.Random(seed)
        self.start = now
        self.listeners: dict[int, QueueListener] = {}
        self.counts = Counts()

    def describe(self) -> str:
        if self.profile == DURABLE_TASK_SCHEDULER:
            return f"latency model {self.profile}: push delivery, {self.hop * 1000:.1f} ms a hop (x{self.scale:g})"
        return (f"latency model {self.profile}: {self.partitions} control queues polled with backoff up to "
                f"{self.longest:g} s, {self.hop * 1000:.1f} ms a hop, {self.workers} worker(s) (x{self.scale:g})")

    def _listener(self, partition: int) -> QueueListener:
        listener = self.listeners.get(partition)
        if listener is None:
            listener = QueueListener(MIN_POLL_SECONDS * self.scale, self.longest * self.scale,
                                     random.Random(self.rng.random()), self.start)
            self.listeners[partition] = listener
        return listener

    def sent(self, instance_id: str, at: float) -> bool:
        """A message to an instance's control queue was sent at `at`; whether its sender's listener
        of that queue woke (the sender is the queue's owner)."""
        self.counts.queue_messages += 1
        if self.profile == DURABLE_TASK_SCHEDULER:
            return True
        local = self.workers == 1 or self.rng.random() < 1 / self.workers
        if local:
            self._listener(partition_of(instance_id, self.partitions)).wake(at)
        return local

    def delivered(self, instance_id: str, visible: float) -> float:
        """When a control-queue message visible from `visible` reaches its orchestrator."""
        if self.profile == DURABLE_TASK_SCHEDULER:
            return visible + self.hop
        return self._listener(partition_of(instance_id, self.partitions)).receive(visible) + self.hop

    def dispatched(self, at: float) -> float:
        """When an activity work item sent at `at` starts on a worker (the sender's listener wakes)."""
        self.counts.queue_messages += 1
        return at + self.hop

    def episode(self) -> None:
        self.counts.episodes += 1

    def idle_until(self, now: float) -> None:
        """Count the empty polls of every control queue (and the work-item queue) up to `now`."""
        if self.profile == DURABLE_TASK_SCHEDULER:
            return
        for partition in range(self.partitions):
            self._listener(partition)
        self._listener(-1)          # the work-item queue's listener: idle whenever nothing is dispatched
        for listener in self.listeners.values():
            listener.idle_until(now)
        self.counts.polls = sum(listener.polls for listener in self.listeners.values()) * self.workers

    def stats(self) -> dict[str, float]:
        c = self.counts
        return {"queue_messages": c.queue_messages, "queue_polls": c.polls,
                "storage_transactions": c.storage_transactions if self.profile == AZURE_STORAGE else 0}


def latency_from_env(scale: float = 1.0, *, host_json: Path = HOST_JSON, now: float = 0.0) -> Latency | None:
    """TOWER_LOCAL_LATENCY = none (default: the local host's own speed) | azure-storage |
    durable-task-scheduler; TOWER_LOCAL_LATENCY_WORKERS (default 1)."""
    profile = os.environ.get("TOWER_LOCAL_LATENCY") or NONE
    if profile not in PROFILES:
        raise EngineError(f"TOWER_LOCAL_LATENCY={profile!r} is not a latency profile of the local host; "
                          f"use one of {', '.join(PROFILES)}")
    if profile == NONE:
        return None
    workers = os.environ.get("TOWER_LOCAL_LATENCY_WORKERS") or "1"
    if not workers.isdigit() or int(workers) < 1:
        raise EngineError(f"TOWER_LOCAL_LATENCY_WORKERS={workers!r}: give a whole number of workers >= 1")
    return Latency(profile, scale=scale, host_json=host_json, workers=int(workers), now=now)
