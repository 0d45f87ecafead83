"""ExecSync output bounds: both streams together stay under the gRPC
message limit, whatever the command prints, and truncation is visible in
the stream that was cut."""

from __future__ import annotations

import re

import pytest

from cri.limits import MAX_MESSAGE_BYTES
from cri.proto import api_pb2 as pb
from runtime.exec_sync import OUTPUT_LIMIT, STREAM_RESERVE, OutputBudget
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config

MARKER = re.compile(rb"\n\[crispy: (stdout|stderr) truncated: kept the first (\d+) bytes, dropped (\d+) more; "
                    rb"ExecSync returns at most (\d+) bytes of output in all\]\n$")


# ---- the budget, sans-IO -------------------------------------------------------

def test_budget_keeps_small_output_whole():
    b = OutputBudget(limit=100, reserve=10)
    b.feed(0, b"hello ")
    b.feed(1, b"oops")
    b.feed(0, b"world")
    assert (b.output(0), b.output(1), b.dropped) == (b"hello world", b"oops", [0, 0])


def test_budget_caps_the_sum_and_keeps_the_other_streams_reserve():
    b = OutputBudget(limit=100, reserve=10)
    for _ in range(50):
        b.feed(0, b"x" * 7)  # 350 bytes on stdout
    # stdout may not eat stderr's reserve ...
    assert len(b.kept[0]) == 90 and b.dropped[0] == 260
    b.feed(1, b"e" * 25)
    # ... and stderr gets only that reserve once stdout took the rest.
    assert len(b.kept[1]) == 10 and b.dropped[1] == 15
    out, err = b.output(0), b.output(1)
    m = MARKER.search(out)
    assert out.startswith(b"x" * 90) and m and m.group(1, 2, 3) == (b"stdout", b"90", b"260")
    assert MARKER.search(err).group(1, 2, 3) == (b"stderr", b"10", b"15")


def test_budget_splits_between_two_floods():
    b = OutputBudget(limit=100, reserve=10)
    for _ in range(40):
        b.feed(0, b"o" * 3)
        b.feed(1, b"e" * 3)
    assert len(b.kept[0]) + len(b.kept[1]) == 100
    assert b.dropped[0] + b.dropped[1] == 240 - 100


def test_limit_leaves_room_under_the_message_limit():
    marker_room = 2 * 200
    assert OUTPUT_LIMIT + marker_room < MAX_MESSAGE_BYTES - 64 * 1024
    assert 2 * STREAM_RESERVE <= OUTPUT_LIMIT


# ---- on the real daemon --------------------------------------------------------


@pytest.fixture(scope="module")
def image(module_daemon):
    return load_image(module_daemon)


@pytest.fixture
def ctr(clean_pods, image):
    with clean_pods.client() as c:
        cfg = pod_config("execout")
        p = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        cid = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=p, config=container_config("main", ["sleep", "1000"]), sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        yield c, cid


def _exec(c, cid, script):
    return c.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", script], timeout=120))


@pytest.mark.integration
def test_100mb_of_stdout_comes_back_truncated_with_a_marker(ctr):
    c, cid = ctr
    r = _exec(c, cid, "head -c 100000000 /dev/zero; echo done >&2; exit 3")
    assert r.exit_code == 3
    m = MARKER.search(r.stdout)
    assert m, r.stdout[-300:]
    kept, dropped = int(m.group(2)), int(m.group(3))
    assert kept + dropped == 100_000_000
    assert r.stdout[:kept] == b"\0" * kept
    assert kept + len(r.stderr) <= OUTPUT_LIMIT
    # stderr, written after the flood, still arrives whole.
    assert r.stderr == b"done\n"


@pytest.mark.integration
def test_two_10mb_streams_fit_one_reply(ctr):
    c, cid = ctr
    r = _exec(c, cid, "head -c 10000000 /dev/zero & head -c 10000000 /dev/zero >&2; wait")
    assert r.exit_code == 0
    out_m, err_m = MARKER.search(r.stdout), MARKER.search(r.stderr)
    # Together they exceed the budget: at least one is cut, and what was kept
    # plus what was dropped is everything that was printed.
    assert out_m or err_m
    total = 0
    for data, m in ((r.stdout, out_m), (r.stderr, err_m)):
        kept = int(m.group(2)) if m else len(data)
        total += kept + (int(m.group(3)) if m else 0)
        assert data[:kept] == b"\0" * kept
    assert total == 20_000_000
    assert len(r.stdout) + len(r.stderr) <= OUTPUT_LIMIT + 400


@pytest.mark.integration
def test_output_below_the_budget_is_untouched(ctr):
    c, cid = ctr
    r = _exec(c, cid, "head -c 5000000 /dev/zero; head -c 3000000 /dev/zero >&2")
    assert (r.stdout, r.stderr) == (b"\0" * 5_000_000, b"\0" * 3_000_000)
