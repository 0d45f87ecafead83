"""The sans-IO parts behind slow-registry handling: the minimum-rate rule,
fair download slots, shared work cancelled when its last caller leaves,
and bounded error messages."""

from __future__ import annotations

import asyncio

import pytest

from cri.rpc import MAX_STATUS_MESSAGE, bounded
from images.platform import Platform, select_manifest
from images.registry.rate import RateGuard
from images.registry.shared import SharedWork
from images.registry.slots import DownloadSlots
from runtime.errors import NotFound

MT = "application/vnd.oci.image.manifest.v1+json"


# ---- minimum rate ----------------------------------------------------------------

def test_rate_guard_window_restarts_once_its_quota_arrived():
    g = RateGuard(min_rate=100, window=2.0, remaining=None, started=0.0)
    assert g.deadline() == 2.0
    g.add(150, 1.0)
    assert g.deadline() == 2.0          # 150 of the 200 bytes this window needs
    g.add(50, 1.5)
    assert g.deadline() == 3.5          # quota met: a new window from now
    g.add(10, 3.0)
    assert g.rate(3.0) == pytest.approx(10 / 1.5)


def test_rate_guard_quota_is_capped_by_what_is_left_and_can_be_off():
    g = RateGuard(min_rate=1000, window=10.0, remaining=30, started=0.0)
    g.add(30, 5.0)                      # the whole rest arrived: never short
    assert g.deadline() == 15.0 and g.got == 0
    assert RateGuard(min_rate=0, window=10.0, remaining=None, started=0.0).deadline() is None


# ---- fair slots ----------------------------------------------------------------------

def test_one_host_may_use_every_slot():
    async def go():
        s = DownloadSlots(3)
        got = [await s.acquire("a") for _ in range(3)]
        assert s.holding("a") == 3 and not any(x.revoked.is_set() for x in got)
    asyncio.run(go())


def test_a_waiting_host_makes_the_busiest_yield_and_gets_the_freed_slot():
    async def go():
        s = DownloadSlots(3)
        a = [await s.acquire("a") for _ in range(3)]
        b = asyncio.ensure_future(s.acquire("b"))
        await asyncio.sleep(0)
        assert [x.revoked.is_set() for x in a] == [False, False, True]  # the newest yields
        # Another of b's downloads does not take a second slot from a (its share is one).
        b2 = asyncio.ensure_future(s.acquire("b"))
        await asyncio.sleep(0)
        assert sum(x.revoked.is_set() for x in a) == 1
        # a's yielding download queues again before it lets go; b still goes first.
        a_again = asyncio.ensure_future(s.acquire("a"))
        await asyncio.sleep(0)
        s.release(a[2])
        slot_b = await b
        assert slot_b.host == "b" and not a_again.done()
        # b holds one, a two: the next free slot goes to b, the host holding fewer.
        s.release(a[0])
        assert (await b2).host == "b" and not a_again.done()
        s.release(slot_b)
        assert (await a_again).host == "a"
    asyncio.run(go())


def test_a_cancelled_waiter_leaves_the_queue():
    async def go():
        s = DownloadSlots(1)
        held = await s.acquire("a")
        w = asyncio.ensure_future(s.acquire("a"))
        await asyncio.sleep(0)
        w.cancel()
        with pytest.raises(asyncio.CancelledError):
            await w
        s.release(held)
        assert s.in_use() == 0
        assert (await s.acquire("c")).host == "c"
    asyncio.run(go())


# ---- shared work ------------------------------------------------------------------------

def test_shared_work_runs_once_and_stops_when_its_last_caller_leaves():
    async def go():
        shared: SharedWork[str, int] = SharedWork()
        started = 0
        cancelled = asyncio.Event()

        async def work() -> int:
            nonlocal started
            started += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 1

        c1 = asyncio.ensure_future(shared.join("k", work))
        c2 = asyncio.ensure_future(shared.join("k", work))
        await asyncio.sleep(0.01)
        assert started == 1
        c1.cancel()
        await asyncio.sleep(0.01)
        assert not cancelled.is_set()        # c2 still waits for it
        c2.cancel()
        await asyncio.wait_for(cancelled.wait(), 5)
        assert not shared.running("k")       # a new caller starts afresh

        async def quick() -> int:
            return 7
        assert await shared.join("k", quick) == 7
    asyncio.run(go())


# ---- bounded messages -------------------------------------------------------------------

def test_status_messages_are_bounded():
    assert bounded("short") == "short"
    long = bounded("é" * 10_000)
    assert len(long.encode()) <= MAX_STATUS_MESSAGE and "more bytes" in long


def test_no_matching_platform_names_a_few_and_counts_the_rest():
    entries = [{"mediaType": MT, "digest": "sha256:" + "0" * 64, "size": 1,
                "platform": {"os": "plan9", "architecture": f"a{i:04d}" * 50}} for i in range(1000)]
    # Registry-controlled junk must not turn into an internal error.
    entries += [{"mediaType": ["x"], "platform": {"os": 1, "architecture": None}}, {"platform": "x"}]
    with pytest.raises(NotFound) as e:
        select_manifest(entries, Platform("linux", "amd64"), {MT}, "image x")
    msg = e.value.message
    assert len(msg) < 600 and "993 more platforms" in msg, msg
