"""Who a container runs as: user and group names resolved against the
container's own /etc/passwd and /etc/group, the way Docker and containerd do.

The files belong to the image, so they are untrusted: paths are resolved
inside the rootfs (an absolute symlink such as /etc/passwd -> /host/etc/passwd
stays inside the container root), only regular files of bounded size are
read (runtime/untrusted_files.py), /etc/group only when a group name or a
user's memberships must be looked up, and malformed lines are skipped.
Both files must be regular (or absent) even when crispy does not read
them, because the OCI runtime opens them as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime import untrusted_files
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.untrusted_files import resolve_in_root

__all__ = ["PasswdEntry", "GroupEntry", "ResolvedUser", "resolve", "resolve_in_root", "read_passwd", "read_group",
           "check_files", "parse_passwd", "parse_group", "MAX_FILE_BYTES"]

# A passwd/group file larger than this is refused, not parsed: real ones
# are kilobytes, even with thousands of users.
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass
class GroupEntry:
    name: str
    gid: int
    members: list[str]


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    username: str = ""
    home: str = "/"


_WHAT_TO_DO = {
    "/etc/passwd": "fix the image's /etc/passwd",
    "/etc/group": "fix the image's /etc/group, or set supplemental_groups_policy Strict and name groups by number",
}


def _refusal(path: str, reason: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the image's {path} {reason}; the container's user and groups are looked up in it (by crispy, and by "
        f"the OCI runtime when it starts the process), which needs a regular file of at most {MAX_FILE_BYTES} "
        f"bytes: {_WHAT_TO_DO[path]}")


def _loop(path: str) -> InvalidArgument:
    return InvalidArgument(f"too many symbolic links resolving {path} in the container root; {_WHAT_TO_DO[path]}")


def check_files(rootfs: str) -> None:
    """Refuses an image whose /etc/passwd or /etc/group exists but is not a
    regular file, whether or not crispy needs to read it: the OCI runtime
    (runc) opens both in the container to set up the process, and its
    open of a FIFO would never return."""
    for path in _WHAT_TO_DO:
        try:
            kind = untrusted_files.kind_in_root(rootfs, path)
        except untrusted_files.SymlinkLoop:
            raise _loop(path) from None
        except untrusted_files.UnreadableFile as e:
            raise _refusal(path, e.reason) from None
        if kind:
            raise _refusal(path, f"is {kind}, not a regular file")


def _read_lines(rootfs: str, path: str) -> list[str]:
    try:
        data = untrusted_files.read_in_root(rootfs, path, MAX_FILE_BYTES)
    except untrusted_files.SymlinkLoop:
        raise _loop(path) from None
    except untrusted_files.UnreadableFile as e:
        raise _refusal(path, e.reason) from None
    if data is None:
        return []
    return data.decode("utf-8", "replace").splitlines()


def parse_passwd(lines: list[str]) -> list[PasswdEntry]:
    out = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) < 4:
            continue
        try:
            out.append(PasswdEntry(f[0], int(f[2]), int(f[3]), f[5] if len(f) > 5 else ""))
        except ValueError:
            continue
    return out


def parse_group(lines: list[str]) -> list[GroupEntry]:
    out = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) < 3:
            continue
        try:
            gid = int(f[2])
        except ValueError:
            continue
        members = [m.strip() for m in f[3].split(",") if m.strip()] if len(f) > 3 else []
        out.append(GroupEntry(f[0], gid, members))
    return out


def read_passwd(rootfs: str) -> list[PasswdEntry]:
    return parse_passwd(_read_lines(rootfs, "/etc/passwd"))


def read_group(rootfs: str) -> list[GroupEntry]:
    return parse_group(_read_lines(rootfs, "/etc/group"))


def _as_id(text: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if value > 0xFFFFFFFE:
            raise InvalidArgument(f"id {text} is out of range (at most 4294967294)")
        return value
    return None


def resolve(rootfs: str, user: str = "", uid: int | None = None, username: str = "",
            gid: int | None = None, supplemental: list[int] | None = None, strict_groups: bool = False) -> ResolvedUser:
    """The container's uid/gid/groups.

    Precedence is Kubernetes': `uid` (run_as_user), else `username`
    (run_as_username), else the image's USER string `user` ("name", "uid",
    "uid:gid", "name:group"). `gid` (run_as_group) overrides the primary group.
    Additional groups are the user's memberships in /etc/group (unless
    `strict_groups`, the Strict supplemental-groups policy) plus `supplemental`.
    """
    check_files(rootfs)
    # A uid alone still needs /etc/passwd: its entry gives the primary
    # group, the home directory and the name memberships are looked up by.
    # /etc/group is read only for a group name or the user's memberships.
    passwd = read_passwd(rootfs)
    groups: list[GroupEntry] | None = None

    def group_file() -> list[GroupEntry]:
        nonlocal groups
        if groups is None:
            groups = read_group(rootfs)
        return groups

    group_part = ""
    if uid is not None:
        entry = next((p for p in passwd if p.uid == uid), None)
        # run_as_user replaces the image USER entirely, including its group.
        res = ResolvedUser(uid, entry.gid if entry else 0, username=entry.name if entry else "",
                           home=entry.home if entry and entry.home else "/")
    else:
        spec = username or user or "0"
        user_part, _, group_part = spec.partition(":")
        if username and ":" in username:
            raise InvalidArgument(f"run_as_username {username!r} must be a user name without a group")
        if not user_part:
            raise InvalidArgument(f"user {spec!r} has no user part; use name, uid, uid:gid or name:group")
        as_id = _as_id(user_part)
        if as_id is not None:
            entry = next((p for p in passwd if p.uid == as_id), None)
            res = ResolvedUser(as_id, entry.gid if entry else 0, username=entry.name if entry else "",
                               home=entry.home if entry and entry.home else "/")
        else:
            entry = next((p for p in passwd if p.name == user_part), None)
            if entry is None:
                raise InvalidArgument(
                    f"user {user_part!r} is not in the image's /etc/passwd; "
                    "use a numeric uid or a user the image defines")
            res = ResolvedUser(entry.uid, entry.gid, username=entry.name, home=entry.home or "/")
        if group_part:
            as_gid = _as_id(group_part)
            if as_gid is None:
                g = next((g for g in group_file() if g.name == group_part), None)
                if g is None:
                    raise InvalidArgument(
                        f"group {group_part!r} is not in the image's /etc/group; "
                        "use a numeric gid or a group the image defines")
                as_gid = g.gid
            res.gid = as_gid
    if gid is not None:
        res.gid = gid
    extra: list[int] = []
    if res.username and not strict_groups:
        extra = [g.gid for g in group_file() if res.username in g.members]
    # The primary group leads the list, as in containerd, so the supplementary
    # groups the kernel reports (`id -G`) always include it.
    for listed in [res.gid] + extra + list(supplemental or []):
        if listed not in res.additional_gids:
            res.additional_gids.append(listed)
    return res
