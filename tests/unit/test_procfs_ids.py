"""runtime/procfs.py: who a process runs as, from /proc/<pid>/status."""

from __future__ import annotations

import os

from runtime import procfs

# As the kernel writes it: tab-separated ids, the group list ends with a space.
STATUS = """Name:\tsleep
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Uid:\t1000\t1001\t1002\t1003
Gid:\t2000\t2001\t2002\t2003
FDSize:\t64
Groups:\t1000 1234 50000\x20
NStgid:\t4242\t1
"""


def test_effective_ids_and_groups():
    assert procfs.parse_ids(STATUS) == procfs.ProcessIds(uid=1001, gid=2001, groups=(1000, 1234, 50000))


def test_no_groups():
    text = STATUS.replace("Groups:\t1000 1234 50000 \n", "Groups:\t\n")
    assert procfs.parse_ids(text) == procfs.ProcessIds(1001, 2001, ())


def test_zombie_and_garbage_have_no_ids():
    assert procfs.parse_ids(STATUS.replace("S (sleeping)", "Z (zombie)")) is None
    assert procfs.parse_ids("Name:\tx\n") is None
    assert procfs.parse_ids("Uid:\tabc\nGid:\t1 1 1 1\n") is None


def test_own_process():
    me = procfs.ids(os.getpid())
    assert me is not None
    assert (me.uid, me.gid) == (os.geteuid(), os.getegid())
    assert set(me.groups) == set(os.getgroups())
    assert procfs.ids(2**22 + 12345) is None
