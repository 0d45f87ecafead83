"""runtime/store.py: records written and read back whole."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from runtime.store import ContainerRecord, RecordStore, SandboxRecord, encode, from_dict


def _pod() -> SandboxRecord:
    return SandboxRecord(id="p" * 64, name="web", namespace="default", uid="u1", attempt=0,
                         config={"metadata": {"name": "web"}, "labels": {"app": "web"}}, runtime_handler="",
                         oci_runtime="/usr/bin/crun", created_at=1, namespaces={"net": "/run/x/net", "infra_pid": 0},
                         network_status={"ip": "10.88.0.2", "additional_ips": [], "state": {"result": {"ips": [1]}}})


def _ctr() -> ContainerRecord:
    return ContainerRecord(id="c" * 64, sandbox_id="p" * 64, name="app", attempt=1,
                           config={"envs": [{"key": "A", "value": "ü"}]}, created_at=2, state="running",
                           resources={"cpu_shares": "2"}, user={"uid": 0, "gid": 0, "supplemental_groups": [1]},
                           mounts=[{"container_path": "/data", "readonly": True}])


def test_encode_is_the_whole_record_as_json() -> None:
    for rec in (_pod(), _ctr()):
        assert json.loads(encode(rec)) == dataclasses.asdict(rec)
        assert from_dict(type(rec), json.loads(encode(rec))) == rec


def test_saved_records_load_back(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.pods_dir.mkdir()
    store.containers_dir.mkdir()
    pod, ctr = _pod(), _ctr()

    async def save() -> None:
        await store.save(pod)
        await store.save(ctr)
        ctr.state = "exited"
        await store.save(ctr)
    asyncio.run(save())
    pods, ctrs = store.load()
    assert pods == [pod] and ctrs == [ctr] and ctrs[0].state == "exited"
    # Nothing but the records themselves: no temp files left.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [f"{ctr.id}.json", f"{pod.id}.json"]
