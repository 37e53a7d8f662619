"""The storage decorator and the breaker gate: what each call goes through, and how."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from keel.errors import NotFound, StorageUnavailable
from keel.resilience import (
    BreakerConfig,
    BreakerGate,
    BreakerState,
    CircuitBreaker,
    Dependency,
    DependencyConfig,
    MemoryBreakerStateStore,
    ResilienceMetrics,
    RetryConfig,
    TransitionReason,
    force_open_breaker,
)
from keel.resilience.wiring import STORAGE, breaker_store_url, dependency_configs
from keel.settings import Settings
from keel.storage import ResilientBlobStore, StoredBlob
from keel.testing import ManualClock


class FakeWriter:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.size = 0
        self.aborted = False

    async def write(self, chunk: bytes) -> None:
        self.store.calls.append("write")
        self.store.maybe_fail()
        self.size += len(chunk)

    async def commit(self) -> StoredBlob:
        self.store.calls.append("commit")
        self.store.maybe_fail()
        return StoredBlob("ns/aa/" + "a" * 64, self.size, "a" * 64)

    async def abort(self) -> None:
        self.aborted = True


class FakeStore:
    """A BlobStore failing the next ``failures`` operations with an OSError-like error."""

    def __init__(self, chunks: list[bytes] | None = None) -> None:
        self.failures = 0
        self.calls: list[str] = []
        self.chunks = chunks if chunks is not None else [b"one", b"two"]
        self.hang = False

    def maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("file storage failed: disk on fire")

    async def begin_write(self, namespace: str) -> FakeWriter:
        self.calls.append("begin_write")
        self.maybe_fail()
        return FakeWriter(self)

    async def read(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        self.calls.append("read")
        if key == "missing":
            raise NotFound("file content is gone")
        self.maybe_fail()
        if self.hang:
            await asyncio.sleep(3600)
        for chunk in self.chunks:
            yield chunk

    async def delete(self, key: str) -> None:
        self.calls.append("delete")
        self.maybe_fail()

    async def exists(self, key: str) -> bool:
        self.calls.append("exists")
        self.maybe_fail()
        return True

    async def probe(self) -> None:
        self.calls.append("probe")
        self.maybe_fail()

    async def collect_abandoned(self, before: datetime) -> int:
        self.calls.append("collect_abandoned")
        self.maybe_fail()
        return 0

    async def aclose(self) -> None:
        self.calls.append("aclose")


async def no_sleep(_seconds: float) -> None:
    return None


def storage_dependency(clock: ManualClock, **breaker: object) -> Dependency:
    settings = Settings(breaker_minimum_calls=4, breaker_window_size=4, **breaker)  # type: ignore[arg-type]
    config = next(c for c in dependency_configs(settings) if c.name == STORAGE)
    config = config.model_copy(update={"timeout_seconds": 0.05})
    return Dependency(
        config, clock=clock, metrics=ResilienceMetrics(CollectorRegistry()), sleep=no_sleep
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def read_all(store: ResilientBlobStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


async def test_reads_are_retried_and_a_passing_retry_answers(clock: ManualClock) -> None:
    inner = FakeStore()
    store = ResilientBlobStore(inner, storage_dependency(clock))
    inner.failures = 1
    assert await read_all(store, "k") == b"onetwo"
    assert inner.calls == ["read", "read"]


async def test_writes_are_never_retried(clock: ManualClock) -> None:
    inner = FakeStore()
    store = ResilientBlobStore(inner, storage_dependency(clock))
    writer = await store.begin_write("ns")
    inner.failures = 1
    with pytest.raises(StorageUnavailable):
        await writer.write(b"x")
    inner.failures = 1
    with pytest.raises(StorageUnavailable):
        await writer.commit()
    assert inner.calls == ["begin_write", "write", "commit"]
    await writer.abort()


async def test_deletes_and_exists_are_retried(clock: ManualClock) -> None:
    inner = FakeStore()
    store = ResilientBlobStore(inner, storage_dependency(clock))
    inner.failures = 1
    await store.delete("k")
    inner.failures = 1
    assert await store.exists("k")
    assert inner.calls == ["delete", "delete", "exists", "exists"]


async def test_a_missing_blob_is_the_callers_404_and_never_trips_the_breaker(
    clock: ManualClock,
) -> None:
    inner = FakeStore()
    dependency = storage_dependency(clock)
    store = ResilientBlobStore(inner, dependency)
    for _ in range(10):
        with pytest.raises(NotFound):
            await read_all(store, "missing")
    assert dependency.breaker.state is BreakerState.CLOSED
    assert dependency.breaker.snapshot().failed == 0


async def test_failures_open_the_breaker_then_calls_fail_fast_as_storage_unavailable(
    clock: ManualClock,
) -> None:
    inner = FakeStore()
    dependency = storage_dependency(clock, storage_retry_attempts=1)
    store = ResilientBlobStore(inner, dependency)
    inner.failures = 4
    for _ in range(4):
        with pytest.raises(StorageUnavailable):
            await store.begin_write("ns")
    assert dependency.breaker.state is BreakerState.OPEN
    calls_before = len(inner.calls)
    with pytest.raises(StorageUnavailable) as rejected:
        await read_all(store, "k")
    assert len(inner.calls) == calls_before  # the disk was not even asked
    assert rejected.value.extensions["reason"] == "breaker-open"
    assert int(rejected.value.headers["Retry-After"]) >= 1


async def test_a_hanging_read_is_cut_by_the_timeout_and_counted_as_a_failure(
    clock: ManualClock,
) -> None:
    inner = FakeStore()
    inner.hang = True
    dependency = storage_dependency(clock, storage_retry_attempts=1)
    store = ResilientBlobStore(inner, dependency)
    with pytest.raises(StorageUnavailable) as cut:
        await read_all(store, "k")
    assert cut.value.extensions["reason"] == "dependency-timeout"
    assert dependency.breaker.snapshot().failed == 1


def test_breaker_state_is_shared_through_redis_when_configured() -> None:
    assert breaker_store_url(Settings()) == "memory://"
    assert breaker_store_url(Settings(redis_url="redis://127.0.0.1:6379/11")) == (
        "redis://127.0.0.1:6379/11"
    )
    explicit = Settings(redis_url="redis://a/1", breaker_store_url="redis://b/2")
    assert breaker_store_url(explicit) == "redis://b/2"
    names = [config.name for config in dependency_configs(Settings())]
    assert names == ["storage", "redis"]  # webhooks: a pool, one per host (wiring.py)


# --- the gate the rate limiter's fallback uses ---------------------------------------


def gate_breaker(
    clock: ManualClock, store: MemoryBreakerStateStore | None = None
) -> CircuitBreaker:
    config = BreakerConfig(
        window_size=4,
        minimum_number_of_calls=4,
        wait_duration_in_open_state=5.0,
        permitted_number_of_calls_in_half_open_state=1,
    )
    return CircuitBreaker(
        "redis", config, clock=clock, store=store, metrics=ResilienceMetrics(CollectorRegistry())
    )


async def test_gate_opens_on_the_failure_rate_and_probes_after_the_wait(
    clock: ManualClock,
) -> None:
    gate = BreakerGate(gate_breaker(clock))
    for _ in range(4):
        assert gate.allow()
        gate.record_failure()
    assert gate.breaker.state is BreakerState.OPEN
    assert not gate.allow()
    clock.advance(5.0)
    assert gate.allow()  # the one probe
    assert not gate.allow()  # no second probe while the first is out
    gate.record_success()
    assert gate.breaker.state is BreakerState.CLOSED
    await gate.aclose()


async def test_gate_keeps_concurrent_permits_apart(clock: ManualClock) -> None:
    gate = BreakerGate(gate_breaker(clock))
    for _ in range(4):
        assert gate.allow()
        gate.record_failure()
    clock.advance(5.0)

    async def probe() -> None:
        assert gate.allow()
        await asyncio.sleep(0)
        gate.record_success()

    async def late_from_closed(token_epoch: int) -> None:
        # A permit from an older state must not decide the probe.
        gate.breaker.on_failure(token_epoch, 0.0)

    stale = gate.breaker.epoch - 1
    await asyncio.gather(probe(), late_from_closed(stale))
    assert gate.breaker.state is BreakerState.CLOSED
    await gate.aclose()


async def test_gate_delivers_transitions_to_listeners_and_the_shared_store(
    clock: ManualClock,
) -> None:
    store = MemoryBreakerStateStore()
    heard: list[TransitionReason] = []
    breaker = gate_breaker(clock, store)
    breaker.add_listener(lambda event: heard.append(event.reason))
    gate = BreakerGate(breaker)
    for _ in range(4):
        assert gate.allow()
        gate.record_failure()
    await gate.aclose()
    assert heard == [TransitionReason.FAILURE_RATE_EXCEEDED]
    record = await store.read("redis")
    assert record is not None
    assert record.state is BreakerState.OPEN


async def test_gate_obeys_an_operator_forcing_it_open(clock: ManualClock) -> None:
    store = MemoryBreakerStateStore()
    gate = BreakerGate(gate_breaker(clock, store))
    assert gate.allow()
    gate.record_success()
    await gate.aclose()

    clock.advance(1.0)
    await force_open_breaker(store, "redis", clock=clock)
    clock.advance(2.0)  # past the sync interval
    gate.allow()  # starts the sync in the background
    await gate.aclose()
    assert gate.breaker.state is BreakerState.FORCED_OPEN
    assert not gate.allow()


def test_dependency_config_for_storage_counts_only_storage_failures() -> None:
    config = next(c for c in dependency_configs(Settings()) if c.name == STORAGE)
    assert StorageUnavailable in config.breaker.record_exceptions
    assert Exception not in config.breaker.record_exceptions
    assert isinstance(config.retry, RetryConfig)
    assert isinstance(config, DependencyConfig)


async def test_gate_takes_back_a_probe_whose_caller_never_reported(clock: ManualClock) -> None:
    gate = BreakerGate(gate_breaker(clock), stale_after=30.0)
    for _ in range(4):
        assert gate.allow()
        gate.record_failure()
    clock.advance(5.0)

    async def cancelled_probe() -> None:
        assert gate.allow()  # and then never a record_*: the task was cancelled

    await asyncio.create_task(cancelled_probe())
    assert gate.breaker.state is BreakerState.HALF_OPEN
    assert not gate.allow()  # the only probe is out
    clock.advance(30.0)
    assert gate.allow()  # taken back: the breaker is not stuck half-open
    gate.record_success()
    assert gate.breaker.state is BreakerState.CLOSED
    await gate.aclose()
