"""runtime/store.py: record schema versions. Records written before the
schema key existed load with their states as enums; unknown keys are
ignored; a record from a newer schema is refused, logged and left alone
(also by the start-up sweep); what is saved carries schema 1 and the
states as their strings."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from runtime.states import ContainerState, PodState
from runtime.store import SCHEMA, RecordStore

P, C = "p" * 64, "c" * 64

# Byte for byte what crispy wrote before records had a schema (runtime/store.py's encode).
OLD_POD = (
    '{"attempt":0,"cgroup_parent":"/crispy/pod-<P>","cgroup_path":"/crispy/pod-<P>","config":{"metadata":'
    '{"name":"web","namespace":"default","uid":"u1"}},"created_at":1700000000000000000,"host_ipc":false,'
    '"host_network":false,"hostname_path":"","hosts_path":"","id":"<P>","name":"web","namespace":"default",'
    '"namespaces":{"infra_pid":0,"net":"/run/crispy/pods/<P>/net"},"network_status":null,'
    '"oci_runtime":"/usr/bin/runc","pid_mode":"pod","pod_dir":"/run/crispy/pods/<P>","request_digest":"'
    + "e" * 64 + '","resolv_conf_path":"","runtime_handler":"","shm_path":"","state":"notready","uid":"u1"}'
).replace("<P>", P)
OLD_CTR = (
    '{"attempt":1,"bundle":"/run/crispy/containers/<C>","cgroup_path":"/crispy/pod-<P>/crispy-<C>","config":'
    '{"image":{"image":"busybox"},"metadata":{"attempt":1,"name":"app"}},"conmon_pid":4241,'
    '"conmon_start_time":123456,"container_dir":"/var/lib/crispy/rootfs/<C>","created_at":1700000000000000000,'
    '"exit_code":7,"finished_at":1700000000200000000,"id":"<C>","image":"busybox","image_id":"sha256:'
    + "a" * 64 + '","image_ref":"sha256:' + "a" * 64 + '","log_path":"/var/log/pods/x/app/1.log","message":"",'
    '"mounts":[],"name":"app","oci_runtime":"/usr/bin/runc","pid":4242,"reason":"Error","request_digest":"'
    + "d" * 64 + '","resources":{},"rootfs":"/run/crispy/containers/<C>/rootfs","sandbox_id":"<P>",'
    '"started_at":1700000000100000000,"state":"exited","stop_signal":"SIGTERM","user":{}}'
).replace("<P>", P).replace("<C>", C)


def _store(tmp_path: Path) -> RecordStore:
    store = RecordStore(tmp_path)
    store.pods_dir.mkdir()
    store.containers_dir.mkdir()
    return store


def test_records_from_before_the_schema_load_with_enum_states(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store.pods_dir / f"{P}.json").write_text(OLD_POD)
    (store.containers_dir / f"{C}.json").write_text(OLD_CTR)
    pods, ctrs = store.load()
    assert len(pods) == 1 and len(ctrs) == 1 and store.refused == set()
    pod, ctr = pods[0], ctrs[0]
    assert pod.state is PodState.NOT_READY and ctr.state is ContainerState.EXITED
    assert (pod.id, pod.pid_mode, pod.cgroup_path, pod.namespaces["net"]) == (
        P, "pod", f"/crispy/pod-{P}", f"/run/crispy/pods/{P}/net")
    assert (ctr.exit_code, ctr.reason, ctr.pid, ctr.conmon_pid, ctr.started_at) == (
        7, "Error", 4242, 4241, 1700000000100000000)
    # Read in, it is a record of this crispy's schema: saved as one.
    assert pod.schema == SCHEMA == ctr.schema == 1


@pytest.mark.parametrize("state", list(ContainerState))
def test_every_container_state_loads_as_its_enum(tmp_path: Path, state: ContainerState) -> None:
    store = _store(tmp_path)
    (store.containers_dir / f"{C}.json").write_text(OLD_CTR.replace('"state":"exited"', f'"state":"{state.value}"'))
    _, ctrs = store.load()
    assert [c.state for c in ctrs] == [state] and type(ctrs[0].state) is ContainerState


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = json.loads(OLD_CTR)
    data.update(schema=1, future_field={"x": 1})
    (store.containers_dir / f"{C}.json").write_text(json.dumps(data))
    _, ctrs = store.load()
    assert len(ctrs) == 1 and ctrs[0].id == C and not hasattr(ctrs[0], "future_field")


def test_a_newer_schema_is_refused_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    newer = json.loads(OLD_POD)
    newer["schema"] = SCHEMA + 1
    (store.pods_dir / f"{P}.json").write_text(json.dumps(newer))
    (store.containers_dir / f"{C}.json").write_text(OLD_CTR)
    with caplog.at_level(logging.ERROR, logger="crispy.store"):
        pods, ctrs = store.load()
    assert pods == [] and [c.id for c in ctrs] == [C]
    assert store.refused == {P}
    assert any("too old to read" in r.getMessage() and "schema 2" in str(r.__dict__.get("fields"))
               for r in caplog.records)
    # Refused is not deleted: a newer crispy still finds it.
    assert json.loads((store.pods_dir / f"{P}.json").read_text())["schema"] == SCHEMA + 1


def test_an_unreadable_state_is_skipped_not_misread(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store.containers_dir / f"{C}.json").write_text(OLD_CTR.replace('"state":"exited"', '"state":"paused"'))
    assert store.load() == ([], []) and store.refused == set()


def test_round_trip_writes_schema_1_and_string_states(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store.pods_dir / f"{P}.json").write_text(OLD_POD)
    (store.containers_dir / f"{C}.json").write_text(OLD_CTR)
    pods, ctrs = store.load()

    async def save() -> None:
        await store.save(pods[0])
        await store.save(ctrs[0])
    asyncio.run(save())
    pod_json = json.loads((store.pods_dir / f"{P}.json").read_text())
    ctr_json = json.loads((store.containers_dir / f"{C}.json").read_text())
    assert pod_json["schema"] == 1 and ctr_json["schema"] == 1
    assert pod_json["state"] == "notready" and ctr_json["state"] == "exited"
    assert type(pod_json["state"]) is str
    # Apart from the schema key, exactly what the old crispy wrote.
    assert {k: v for k, v in pod_json.items() if k != "schema"} == json.loads(OLD_POD)
    assert {k: v for k, v in ctr_json.items() if k != "schema"} == json.loads(OLD_CTR)
    again_pods, again_ctrs = store.load()
    assert again_pods == pods and again_ctrs == ctrs


def test_the_sweep_leaves_refused_records_objects_alone(tmp_path: Path) -> None:
    """A pod or container whose record a newer crispy wrote is not a
    leftover: the start-up sweep must not tear it down."""
    from runtime.handlers import RuntimeHandlers
    from runtime.host import CgroupLayout
    from runtime.index import RecordIndex
    from runtime.oci.factory import RuntimeFactory
    from runtime.pod_cgroups import PodCgroups
    from runtime.sandbox_orphans import OrphanSweep
    from runtime.settings import LifecycleSettings

    state, data = tmp_path / "state", tmp_path / "data"
    for d in ("pods", "containers", "sock"):
        (state / d).mkdir(parents=True)
    (state / "pods" / P).mkdir()
    (state / "containers" / C).mkdir()
    (state / "pods" / ("q" * 64)).mkdir()  # a real leftover, for contrast
    settings = LifecycleSettings(state_root=state, data_root=data,
                                 cgroup_layout=CgroupLayout(mode="v2", unified_path=str(tmp_path)))

    class NoNetwork:
        async def teardown(self, req, status):  # type: ignore[no-untyped-def]
            raise AssertionError("no pod here had a network")
    runtimes = RuntimeFactory(state)
    sweep = OrphanSweep(state, data, index=RecordIndex(), network=NoNetwork(),  # type: ignore[arg-type]
                        pod_cgroups=PodCgroups(None, settings), runtimes=runtimes,
                        handlers=RuntimeHandlers(settings, runtimes))
    asyncio.run(sweep.sweep(keep={P, C}))
    assert sorted(p.name for p in (state / "pods").iterdir()) == [P]
    assert [p.name for p in (state / "containers").iterdir()] == [C]
