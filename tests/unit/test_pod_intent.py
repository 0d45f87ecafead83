from __future__ import annotations

from runtime import pod_intent
from runtime.network import PodNetworkRequest, PortMapping


def test_round_trip_gives_back_what_del_needs(tmp_path):
    assert pod_intent.read(tmp_path) is None
    intent = pod_intent.PodIntent(cgroup_path="/crispy/pod-1")
    pod_intent.write(tmp_path, intent)
    assert pod_intent.read(tmp_path) == intent and intent.request() is None
    req = PodNetworkRequest("a" * 64, "/run/x/net", "p", "ns", "uid", [PortMapping("tcp", 80, 8080, "")], "/kubepods")
    state = {"network": "n", "conflist": {"name": "n", "plugins": [{"type": "bridge"}]}, "ifname": "eth0"}
    pod_intent.write(tmp_path, pod_intent.with_network(intent, req, state))
    back = pod_intent.read(tmp_path)
    assert back is not None and back.cgroup_path == "/crispy/pod-1"
    assert back.request() == req and back.network_state == state
    assert [p.name for p in tmp_path.iterdir()] == [pod_intent.FILE_NAME]


def test_unreadable_intent_is_treated_as_empty(tmp_path):
    pod_intent.path_of(tmp_path).write_text("{torn")
    assert pod_intent.read(tmp_path) == pod_intent.PodIntent()
    pod_intent.path_of(tmp_path).write_text('["not", "an", "object"]')
    assert pod_intent.read(tmp_path) == pod_intent.PodIntent()



def test_mark_stopping_leaves_the_intent_alone(tmp_path):
    assert not pod_intent.stopping(tmp_path)
    intent = pod_intent.PodIntent(cgroup_path="/crispy/pod-2")
    pod_intent.write(tmp_path, intent)
    pod_intent.mark_stopping(tmp_path)
    pod_intent.mark_stopping(tmp_path)  # a retried stop
    assert pod_intent.stopping(tmp_path)
    assert pod_intent.read(tmp_path) == intent
    # A pod with no intent file (made by an older crispy) is marked too.
    other = tmp_path / "other"
    other.mkdir()
    pod_intent.mark_stopping(other)
    assert pod_intent.stopping(other) and pod_intent.read(other) is None
