"""The event bus (runtime/events.py): what the lifecycle publishes and in
which order, snapshots that later changes do not touch, a slow subscriber
cut off without slowing anyone, exits found at start-up held for the
subscribers that come right after, and the CRI messages made of events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cri.proto import api_pb2 as pb
from cri.servicers.events import event_message
from runtime.errors import ErrorKind
from runtime.events import Event, EventBus, EventKind, EventsOverflow, Subscription
from runtime.index import RecordIndex
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, SandboxRecord
from tests.unit.lifecycle_kit import Lifecycle, Node, run


def drain(sub: Subscription) -> list[Event]:
    out = []
    while sub._queue:
        out.append(sub._queue.popleft())
    return out


def kinds(events: list[Event]) -> list[tuple[str, str, bool]]:
    return [(e.kind.value, e.container_id, e.is_pod) for e in events]


def test_a_pods_and_containers_lifecycle_in_order_with_their_statuses(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        with life.events.subscribe() as sub:
            pod_id = await life.run_pod()
            ctr_id = await life.create(pod_id)
            await life.containers.start(ctr_id)
            node.runtime.exit(ctr_id, 3)
            assert await life.exits.wait(life.ctr(ctr_id), 5.0)
            await life.containers.remove(ctr_id)
            await life.pods.stop(pod_id)
            await life.pods.stop(pod_id)  # kubelet repeats it: no second event
            await life.pods.remove(pod_id)
            events = drain(sub)
        assert kinds(events) == [
            ("created", pod_id, True), ("started", pod_id, True),
            ("created", ctr_id, False), ("started", ctr_id, False), ("stopped", ctr_id, False),
            ("deleted", ctr_id, False), ("stopped", pod_id, True), ("deleted", pod_id, True)]
        created, started, stopped, deleted = events[2:6]
        assert [c.state for c in created.containers] == [ContainerState.CREATED]
        assert [c.state for c in started.containers] == [ContainerState.RUNNING]
        assert [(c.state, c.exit_code, c.reason) for c in stopped.containers] == [(ContainerState.EXITED, 3, "Error")]
        assert deleted.containers == ()
        assert all(e.pod is not None and e.pod.id == pod_id for e in events)
        assert events[6].pod is not None and events[6].pod.state == PodState.NOT_READY
        # The pod's last event still names it (kubelet reads its uid).
        msg = event_message(events[-1])
        assert msg.container_event_type == pb.CONTAINER_DELETED_EVENT
        assert msg.pod_sandbox_status.metadata.uid == "uid-1"
        assert life.events.subscribers() == 0
    run(tmp_path, body)


def test_the_cri_message_carries_the_statuses_as_they_were(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        with life.events.subscribe() as sub:
            await life.containers.start(ctr_id)
            node.runtime.exit(ctr_id, 0)
            assert await life.exits.wait(life.ctr(ctr_id), 5.0)
            started, stopped = drain(sub)
        msg = event_message(started)
        assert (msg.container_id, msg.container_event_type) == (ctr_id, pb.CONTAINER_STARTED_EVENT)
        assert msg.pod_sandbox_status.id == pod_id and msg.pod_sandbox_status.state == pb.SANDBOX_READY
        # The later exit did not reach into the earlier event.
        assert [s.state for s in msg.containers_statuses] == [pb.CONTAINER_RUNNING]
        done = event_message(stopped)
        assert [(s.state, s.exit_code, s.reason) for s in done.containers_statuses] == [
            (pb.CONTAINER_EXITED, 0, "Completed")]
        assert done.created_at >= msg.created_at > 0
    run(tmp_path, body)


def _record(index: RecordIndex) -> ContainerRecord:
    index.sandboxes["p"] = SandboxRecord(id="p", name="web", namespace="ns", uid="u", attempt=0, config={},
                                         created_at=1, runtime_handler="", oci_runtime="")
    ctr = ContainerRecord(id="c", sandbox_id="p", name="app", attempt=0, config={}, created_at=2)
    index.containers["c"] = ctr
    return ctr


def test_a_subscriber_that_falls_behind_is_cut_off_and_the_others_are_not() -> None:
    async def main() -> None:
        index = RecordIndex()
        ctr = _record(index)
        bus = EventBus(index, queue_size=3)
        bus.serving()
        slow, fast = bus.subscribe(), bus.subscribe()
        got = []
        for _ in range(10):
            bus.container(EventKind.STARTED, ctr)  # never waits, whoever reads
            got.append(await fast.next())
        assert len(got) == 10
        with pytest.raises(EventsOverflow) as e:
            await slow.next()
        assert e.value.kind is ErrorKind.RESOURCE_EXHAUSTED
        assert "more than 3 events behind" in e.value.message and "list pods and containers again" in e.value.message
        assert slow.dropped == 10  # the 3 it held are stale too
        assert bus.info()["overflows"] == 1
        # Cut off for good: what comes later does not revive it.
        bus.container(EventKind.STOPPED, ctr)
        with pytest.raises(EventsOverflow):
            await slow.next()
        assert (await fast.next()).kind is EventKind.STOPPED
    asyncio.run(main())


def test_a_waiting_subscriber_wakes_on_publish_and_ends_at_close() -> None:
    async def main() -> None:
        index = RecordIndex()
        ctr = _record(index)
        bus = EventBus(index)
        bus.serving()
        sub = bus.subscribe()
        waiter = asyncio.create_task(sub.next())
        await asyncio.sleep(0)
        bus.container(EventKind.CREATED, ctr)
        assert (await asyncio.wait_for(waiter, 1.0)).container_id == "c"
        waiter = asyncio.create_task(sub.next())
        await asyncio.sleep(0)
        bus.close()
        with pytest.raises(Exception) as e:
            await asyncio.wait_for(waiter, 1.0)
        assert getattr(e.value, "kind", None) is ErrorKind.UNAVAILABLE
    asyncio.run(main())


def test_nothing_is_copied_with_nobody_listening(monkeypatch: pytest.MonkeyPatch) -> None:
    index = RecordIndex()
    ctr = _record(index)
    bus = EventBus(index)
    bus.serving()

    def no_snapshots(sandbox_id: str) -> list[ContainerRecord]:
        raise AssertionError("an event was built for nobody")
    monkeypatch.setattr(index, "containers_of", no_snapshots)
    bus.container(EventKind.CREATED, ctr)
    assert bus.published == 1


def test_exits_found_at_start_up_reach_subscribers_that_come_soon_after(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        await life.containers.start(ctr_id)
        life.shut_down()
        node.runtime.exit(ctr_id, 7)  # while crispy is down
        life = await Lifecycle(node).start()
        with life.events.subscribe() as sub:
            events = drain(sub)
        assert kinds(events) == [("stopped", ctr_id, False)]
        assert [(c.state, c.exit_code) for c in events[0].containers] == [(ContainerState.EXITED, 7)]
        # Past the window, a new subscriber starts with live events only.
        life.events._backlog_until = 0.0
        with life.events.subscribe() as late:
            assert drain(late) == []
    run(tmp_path, body)


def test_held_events_do_not_count_against_the_queue_and_expire() -> None:
    async def main() -> None:
        index = RecordIndex()
        ctr = _record(index)
        now = [0.0]
        bus = EventBus(index, queue_size=2, backlog_window=10.0, clock=lambda: now[0])
        for _ in range(5):  # recorded at start-up, before serving
            bus.container(EventKind.STOPPED, ctr)
        bus.serving()
        sub = bus.subscribe()
        bus.container(EventKind.STARTED, ctr)  # one live event on top: no cut-off
        got = [await sub.next() for _ in range(6)]
        assert [e.kind for e in got] == [EventKind.STOPPED] * 5 + [EventKind.STARTED]
        now[0] = 11.0
        bus.container(EventKind.DELETED, ctr)  # past the window: the held events are dropped
        assert bus._backlog is None
        assert (await sub.next()).kind is EventKind.DELETED
    asyncio.run(main())


def test_an_exit_found_after_serving_but_before_the_first_subscriber_is_held_for_it() -> None:
    async def main() -> None:
        index = RecordIndex()
        ctr = _record(index)
        bus = EventBus(index)
        bus.serving()
        # A restarted exit watcher finds the exit a moment after crispy serves.
        bus.container(EventKind.STOPPED, ctr)
        first = bus.subscribe()
        assert (await asyncio.wait_for(first.next(), 1.0)).kind is EventKind.STOPPED
        # Once someone listens, live events are no longer held...
        bus.container(EventKind.DELETED, ctr)
        assert (await asyncio.wait_for(first.next(), 1.0)).kind is EventKind.DELETED
        # ...but what start-up found still reaches the next one in the window.
        second = bus.subscribe()
        assert (await asyncio.wait_for(second.next(), 1.0)).kind is EventKind.STOPPED
        assert len(second._queue) == 0  # DELETED came live to the first, it was not held
    asyncio.run(main())


def test_an_exit_seen_while_the_start_is_under_way_comes_after_started() -> None:
    index = RecordIndex()
    ctr = _record(index)
    bus = EventBus(index)
    bus.serving()
    with bus.subscribe() as sub:
        with bus.starting(ctr):
            bus.container(EventKind.STOPPED, ctr)  # the exit watcher, first
            bus.container(EventKind.STARTED, ctr)  # then StartContainer
        # A start that fails still lets its exit out.
        with pytest.raises(OSError), bus.starting(ctr):
            bus.container(EventKind.STOPPED, ctr)
            raise OSError("start failed")
        bus.container(EventKind.STOPPED, ctr)  # outside a start: at once
        assert [e.kind for e in drain(sub)] == [EventKind.STARTED, EventKind.STOPPED, EventKind.STOPPED,
                                                EventKind.STOPPED]
