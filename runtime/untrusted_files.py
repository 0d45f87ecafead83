"""Reading files crispy does not control on behalf of a request: an image's
/etc/passwd and /etc/group, a Localhost seccomp profile, CDI specs.

Such a file may be anything. open(2) of a FIFO blocks until a writer comes
(never, in an image), a device may block or have side effects when opened,
and a regular file may be huge. So a file is first opened with O_PATH,
which touches nothing behind the inode, checked with fstat to be a regular
file of bounded size, and only then reopened for reading. A path inside a
container root is resolved with the root as "/" by the kernel (openat2
RESOLVE_IN_ROOT), so no symlink leads out of it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from runtime.errors import InvalidArgument

__all__ = ["UnreadableFile", "SymlinkLoop", "kind_in_root", "read_in_root", "read_host_file", "resolve_in_root"]

MAX_SYMLINKS = 40

# openat2(2), Linux 5.6; the same number on every architecture.
_SYS_OPENAT2 = 437
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
# A container root is one overlay mount when its files are read; a mount
# inside it would be something nobody meant to be read through.
_IN_ROOT = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class UnreadableFile(Exception):
    """The file exists but is not read; `reason` completes "<file> ...",
    e.g. "is a FIFO, not a regular file"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SymlinkLoop(UnreadableFile):
    """Resolving the path met more symbolic links than the kernel follows."""

    def __init__(self) -> None:
        super().__init__("has too many levels of symbolic links")


_have_openat2: bool | None = None


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _read_regular(path_fd: int, limit: int) -> bytes:
    """The content behind an O_PATH descriptor, if it is a regular file of
    at most `limit` bytes."""
    st = os.fstat(path_fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(f"is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise UnreadableFile(f"is larger than {limit} bytes ({st.st_size})")
    # Reopening through /proc reaches the very inode checked above, whatever
    # happened to the path since. O_NONBLOCK and O_NOCTTY are belt and braces.
    fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:  # it grew after the fstat
        raise UnreadableFile(f"is larger than {limit} bytes")
    return b"".join(chunks)


def _open_in_root(root: str, path: str) -> int | None:
    """An O_PATH descriptor for `path` seen from inside `root`; None if absent."""
    global _have_openat2
    if _have_openat2 is not False:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for _ in range(16):
                try:
                    fd = _openat2(root_fd, path.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC, _IN_ROOT)
                    _have_openat2 = True
                    return fd
                except OSError as e:
                    if e.errno == errno.EAGAIN:  # a rename elsewhere raced the lookup: try again
                        continue
                    if e.errno in (errno.ENOSYS, errno.EPERM) and _have_openat2 is None:
                        # An old kernel, or a seccomp filter around us, lacks openat2.
                        _have_openat2 = False
                        break
                    if e.errno in (errno.ENOENT, errno.ENOTDIR):
                        return None
                    raise _unreadable(e) from None
            else:
                raise UnreadableFile("could not be looked up: the container root kept changing")
        finally:
            os.close(root_fd)
    try:
        host = resolve_in_root(root, path)
    except InvalidArgument:
        raise SymlinkLoop() from None
    except OSError as e:
        raise _unreadable(e) from None
    try:
        # The walk resolved every symlink; one left at the end was put there
        # since, and O_NOFOLLOW opens it as a link, which is then refused.
        return os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise _unreadable(e) from None


def _unreadable(e: OSError) -> UnreadableFile:
    if e.errno == errno.ELOOP:
        return SymlinkLoop()
    if e.errno == errno.EXDEV:
        return UnreadableFile("is on another mount inside the container root")
    return UnreadableFile(f"cannot be opened: {os.strerror(e.errno) if e.errno else e}")


def resolve_in_root(root: str, path: str, follow_last: bool = True) -> str:
    """The host path of `path` as seen from inside `root`, following
    symlinks with `root` as "/" so nothing escapes it: the walk for kernels
    without openat2. With `follow_last` False a symlink as the final
    component stays as it is (what lstat would look at)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if not parts and not follow_last:
            resolved.append(part)
            break
        host = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(host)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                resolved.append(part)
                continue
            raise
        links += 1
        if links > MAX_SYMLINKS:
            raise InvalidArgument(f"too many symbolic links resolving {path} in the container root")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved)


def kind_in_root(root: str, path: str) -> str | None:
    """What `path` inside `root` is, without opening what is behind it:
    None if there is no such file, "" if it is a regular file, else
    "a FIFO", "a directory", ..."""
    fd = _open_in_root(root, path)
    if fd is None:
        return None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    return "" if stat.S_ISREG(mode) else _kind(mode)


def read_in_root(root: str, path: str, limit: int) -> bytes | None:
    """The content of regular file `path` inside container root `root`
    (symlinks resolved inside it); None if there is no such file.
    UnreadableFile if it is anything else, or larger than `limit`."""
    fd = _open_in_root(root, path)
    if fd is None:
        return None
    try:
        return _read_regular(fd, limit)
    finally:
        os.close(fd)


def read_host_file(path: str, limit: int) -> bytes:
    """The content of regular file `path` on the node (symlinks followed:
    operators link profiles and specs into place). FileNotFoundError if it
    is absent; UnreadableFile if it is anything else or larger than `limit`."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from None
        raise _unreadable(e) from None
    try:
        return _read_regular(fd, limit)
    finally:
        os.close(fd)
