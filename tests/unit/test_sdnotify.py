"""The notify protocol against a real NOTIFY_SOCKET datagram socket."""

import os
import socket

import pytest

from cri import sdnotify


def test_message_is_newline_separated_assignments():
    assert sdnotify.message(READY=1, STATUS="serving on /x") == b"READY=1\nSTATUS=serving on /x"
    with pytest.raises(ValueError):
        sdnotify.message(STATUS="two\nlines")


@pytest.mark.parametrize("env,want", [
    ({}, None),
    ({"NOTIFY_SOCKET": ""}, None),
    ({"NOTIFY_SOCKET": "relative"}, None),
    ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify"),
    ({"NOTIFY_SOCKET": "@abstract"}, "\0abstract"),
])
def test_socket_address(env, want):
    assert sdnotify.socket_address(env) == want


@pytest.mark.parametrize("env,want", [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "x"}, None),
    ({"WATCHDOG_USEC": "2000000"}, 1.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}, 1.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "43"}, None),  # another process's watchdog
])
def test_watchdog_interval_is_half_the_timeout_for_this_process_only(env, want):
    assert sdnotify.watchdog_interval(env, 42) == want


@pytest.fixture
def listener(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    s.bind(str(path))
    s.settimeout(5)
    yield s, str(path)
    s.close()


def test_datagrams_reach_a_real_notify_socket(listener):
    s, path = listener
    n = sdnotify.Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.send(READY=1, STATUS="up")
    assert s.recv(4096) == b"READY=1\nSTATUS=up"
    assert n.send(STOPPING=1)
    assert s.recv(4096) == b"STOPPING=1"


def test_abstract_socket(tmp_path):
    name = f"crispy-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(5)
    try:
        assert sdnotify.Notifier({"NOTIFY_SOCKET": "@" + name}).send(WATCHDOG=1)
        assert s.recv(4096) == b"WATCHDOG=1"
    finally:
        s.close()


def test_outside_systemd_sending_is_a_no_op_and_a_gone_listener_is_not_fatal(tmp_path):
    assert sdnotify.Notifier({}).send(READY=1) is False
    assert sdnotify.Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).send(READY=1) is False


def test_inherited_environment_is_taken_away_from_children(monkeypatch, listener):
    _, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = sdnotify.Notifier()
    assert n.address == path and n.watchdog == 0.5
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
