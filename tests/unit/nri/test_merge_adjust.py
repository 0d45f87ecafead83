"""Merging several plugins' adjustments (ownership conflicts as
containerd/nri resolves them) and applying the result to an OCI spec."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidArgument, Unimplemented
from runtime.nri.adjust import apply_adjustment
from runtime.nri.convert import container_message, resources_to_cri
from runtime.nri.merge import Conflict, CreateResult, UpdateSet
from runtime.nri.proto import api_pb2 as api
from runtime.store import ContainerRecord


def _reply(**adjust: object) -> api.CreateContainerResponse:
    return api.CreateContainerResponse(adjust=api.ContainerAdjustment(**adjust))  # type: ignore[arg-type]


def _mem(limit: int) -> api.LinuxContainerAdjustment:
    adj = api.LinuxContainerAdjustment()
    adj.resources.memory.limit.value = limit
    return adj


def test_two_plugins_setting_different_fields_merge() -> None:
    r = CreateResult("c1")
    r.add("10-a", _reply(annotations={"a": "1"}, env=[api.KeyValue(key="A", value="1")]))
    r.add("20-b", _reply(annotations={"b": "2"}, linux=_mem(1 << 20)))
    assert dict(r.adjust.annotations) == {"a": "1", "b": "2"}
    assert [e.key for e in r.adjust.env] == ["A"]
    assert r.adjust.linux.resources.memory.limit.value == 1 << 20


@pytest.mark.parametrize("first,second", [
    (_reply(annotations={"k": "1"}), _reply(annotations={"k": "2"})),
    (_reply(linux=_mem(1)), _reply(linux=_mem(2))),
    (_reply(mounts=[api.Mount(destination="/x", source="/a")]), _reply(mounts=[api.Mount(destination="/x")])),
    (_reply(env=[api.KeyValue(key="E", value="1")]), _reply(env=[api.KeyValue(key="E", value="2")])),
    (_reply(args=["a"]), _reply(args=["b"])),
])
def test_a_field_set_by_two_plugins_is_a_conflict_naming_both(first: api.CreateContainerResponse,
                                                              second: api.CreateContainerResponse) -> None:
    r = CreateResult("c1")
    r.add("10-a", first)
    with pytest.raises(Conflict) as e:
        r.add("20-b", second)
    assert "10-a" in e.value.message and "20-b" in e.value.message


def test_a_removal_belongs_to_its_plugin() -> None:
    r = CreateResult("c1")
    r.add("10-a", _reply(annotations={"-k": ""}))
    r.add("10-a", _reply(annotations={"k": "again"}))  # the remover may set it again
    assert r.adjust.annotations["k"] == "again"
    r2 = CreateResult("c1")
    r2.add("10-a", _reply(annotations={"-k": ""}))
    with pytest.raises(Conflict):
        r2.add("20-b", _reply(annotations={"k": "x"}))


def test_hooks_add_up_without_conflict() -> None:
    r = CreateResult("c1")
    r.add("10-a", _reply(hooks=api.Hooks(prestart=[api.Hook(path="/a")])))
    r.add("20-b", _reply(hooks=api.Hooks(prestart=[api.Hook(path="/b")])))
    assert [h.path for h in r.adjust.hooks.prestart] == ["/a", "/b"]


def test_updates_of_one_container_merge_and_conflict() -> None:
    u = UpdateSet()
    a = api.ContainerUpdate(container_id="x")
    a.linux.resources.cpu.shares.value = 512
    b = api.ContainerUpdate(container_id="x")
    b.linux.resources.memory.limit.value = 1 << 30
    u.add("10-a", [a])
    u.add("20-b", [b])
    (merged,) = u.updates()
    assert resources_to_cri(merged.linux.resources) == {"cpu_shares": "512", "memory_limit_in_bytes": str(1 << 30)}
    with pytest.raises(Conflict):
        u.add("30-c", [a])
    ignored = api.ContainerUpdate(container_id="x", ignore_failure=True)
    ignored.linux.resources.cpu.shares.value = 1
    u.add("30-c", [ignored])  # a conflicting update that may fail is dropped


def _spec() -> dict:
    return {"process": {"args": ["sh"], "env": ["PATH=/bin", "DROP=1"], "oomScoreAdj": 0},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/old", "type": "bind", "source": "/x"}],
            "annotations": {"keep": "1", "gone": "1"},
            "linux": {"resources": {"memory": {"limit": 5}}, "namespaces": [{"type": "pid"}]}}


def test_adjustment_applied_to_the_spec() -> None:
    adj = api.ContainerAdjustment(
        annotations={"new": "v", "-gone": ""},
        env=[api.KeyValue(key="NRI", value="yes"), api.KeyValue(key="-DROP")],
        mounts=[api.Mount(destination="/data", type="bind", source="/tmp", options=["rbind", "ro"]),
                api.Mount(destination="-/old")],
        rlimits=[api.POSIXRlimit(type="RLIMIT_NOFILE", hard=100, soft=50)],
        hooks=api.Hooks(poststop=[api.Hook(path="/bin/true")]))
    adj.linux.resources.memory.limit.value = 64 << 20
    adj.linux.resources.cpu.cpus = "0"
    adj.linux.oom_score_adj.value = -500
    setattr(adj.linux.io_priority, "class", api.IOPRIO_CLASS_BE)
    adj.linux.io_priority.priority = 4
    spec = _spec()
    apply_adjustment(spec, adj, min_oom_score_adj=-100)
    assert spec["annotations"] == {"keep": "1", "new": "v"}
    assert spec["process"]["env"] == ["PATH=/bin", "NRI=yes"]
    assert [m["destination"] for m in spec["mounts"]] == ["/proc", "/data"]
    assert spec["mounts"][1] == {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]}
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 100, "soft": 50}]
    assert spec["hooks"] == {"poststop": [{"path": "/bin/true"}]}
    assert spec["linux"]["resources"]["memory"] == {"limit": 64 << 20}
    assert spec["linux"]["resources"]["cpu"] == {"cpus": "0"}
    # Never below the daemon's own score: lowering it needs a capability root may lack.
    assert spec["process"]["oomScoreAdj"] == -100
    assert spec["process"]["ioPriority"] == {"class": "IOPRIO_CLASS_BE", "priority": 4}


def test_adjustments_crispy_cannot_make_are_refused() -> None:
    adj = api.ContainerAdjustment()
    adj.linux.scheduler.nice = 1
    with pytest.raises(Unimplemented):
        apply_adjustment(_spec(), adj, min_oom_score_adj=0)
    with pytest.raises(InvalidArgument):
        apply_adjustment(_spec(), api.ContainerAdjustment(mounts=[api.Mount(destination="rel")]), min_oom_score_adj=0)


def test_container_message_from_record_and_spec() -> None:
    ctr = ContainerRecord(id="c1", sandbox_id="p1", name="web", attempt=0,
                          config={"labels": {"l": "1"}, "annotations": {"a": "1"}}, created_at=5)
    msg = container_message(ctr, _spec())
    assert (msg.id, msg.pod_sandbox_id, msg.name, msg.state) == ("c1", "p1", "web", api.CONTAINER_CREATED)
    assert dict(msg.labels) == {"l": "1"}
    assert msg.annotations["keep"] == "1" and msg.annotations["a"] == "1"
    assert list(msg.args) == ["sh"] and "PATH=/bin" in msg.env
    assert msg.linux.resources.memory.limit.value == 5
    assert [m.destination for m in msg.mounts] == ["/proc", "/old"]
