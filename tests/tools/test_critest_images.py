"""critest/images.py: the offline stand-ins for the images critest pulls.

Property tests read the built layers back; the integration tests run the
images' binaries in a chroot to show the library closure is complete and the
helpers behave as the specs expect."""

from __future__ import annotations

import ctypes
import gzip
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from critest import images

E2E = images.E2E
CRT = images.CRI_TOOLS

# Every reference critest v1.36 (and its main branch) pulls on linux/amd64,
# read from pkg/validate and pkg/framework.
SUITE_REFS = [
    E2E + "busybox:1.29-2", E2E + "nginx:1.14-2", E2E + "httpd:2.4.39-4", E2E + "nonewprivs:1.3",
    "registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9",
    CRT + "test-image-user-uid:latest", CRT + "test-image-user-username:latest",
    CRT + "test-image-user-uid-group:latest", CRT + "test-image-user-username-group:latest",
    CRT + "test-image-predefined-group:latest", CRT + "test-image-latest:latest",
    CRT + "test-image-tag:test", CRT + "test-image-tag:all",
    CRT + "test-image-1:latest", CRT + "test-image-2:latest", CRT + "test-image-3:latest",
    CRT + "test-image-tags:1", CRT + "test-image-tags:2", CRT + "test-image-tags:3",
    CRT + f"hostnet-nginx-{images.go_arch()}:latest",
]


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[images.Toolbox, dict[str, images.TestImage]]]:
    work = Path(tempfile.mkdtemp(prefix="crispy-ctimg-"))
    try:
        tools = images.prepare_toolbox(work)
        cat = images.catalogue(tools)
        yield tools, {ref: img for img in cat for ref in img.refs}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def manifest_of(img: images.TestImage):
    (one,) = img.image.images
    return one


def config_of(img: images.TestImage) -> dict:
    return json.loads(manifest_of(img).config)


def files_of(img: images.TestImage) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """The merged filesystem: later layers win (no whiteouts are used)."""
    one = manifest_of(img)
    merged: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    for desc in json.loads(one.manifest)["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(one.blobs[desc["digest"]]))) as tar:
            for info in tar.getmembers():
                data = tar.extractfile(info).read() if info.isfile() else b""
                merged[info.name] = (info, data)
    return merged


def text(img: images.TestImage, path: str) -> str:
    return files_of(img)[path][1].decode()


def test_every_suite_reference_is_built_or_known_unreproducible(built) -> None:
    _, by_ref = built
    missing = [r for r in SUITE_REFS if r not in by_ref]
    assert missing == []
    for ref in images.UNREPRODUCIBLE:
        name = ref.split("@", 1)[0]
        assert name + ":latest" in by_ref  # pushed under its name; only the digest cannot match


def test_refs_split_into_registry_paths() -> None:
    assert images.split_ref(E2E + "busybox:1.29-2") == ("registry.k8s.io", "e2e-test-images/busybox", "1.29-2")
    assert images.split_ref("k8s.gcr.io/pause:3.9") == ("k8s.gcr.io", "pause", "3.9")
    assert images.split_ref(CRT + "test-image-latest") == ("gcr.io", "k8s-staging-cri-tools/test-image-latest", "latest")


def test_images_are_one_platform_manifest_lists(built) -> None:
    _, by_ref = built
    for img in by_ref.values():
        index = json.loads(img.image.manifest)
        assert index["mediaType"] == images.imagebuild.DOCKER_LIST
        assert [m["platform"] for m in index["manifests"]] == [{"os": "linux", "architecture": images.go_arch()}]


def test_user_images_carry_upstream_users(built) -> None:
    _, by_ref = built
    expect = {"test-image-user-uid": "1002", "test-image-user-username": "www-data",
              "test-image-user-uid-group": "1003:1004", "test-image-user-username-group": "www-data:1004",
              "test-image-predefined-group": "1000"}
    for name, user in expect.items():
        assert config_of(by_ref[CRT + name + ":latest"])["config"]["User"] == user
    passwd = text(by_ref[CRT + "test-image-user-username:latest"], "etc/passwd")
    assert "www-data:x:33:33:" in passwd


def test_predefined_group_image_puts_its_user_in_gid_50000(built) -> None:
    _, by_ref = built
    img = by_ref[CRT + "test-image-predefined-group:latest"]
    assert "default-user:x:1000:1000:" in text(img, "etc/passwd")
    group = text(img, "etc/group").splitlines()
    assert "group-defined-in-image:x:50000:default-user" in group
    assert "default-user:x:1000:" in group
    home = files_of(img)["home/default-user"][0]
    assert home.isdir() and (home.uid, home.gid) == (1000, 1000)


def test_default_image_has_the_applets_and_tools_the_specs_run(built) -> None:
    tools, by_ref = built
    img = by_ref[E2E + "busybox:1.29-2"]
    assert config_of(img)["config"]["Cmd"] == ["sh"]
    fs = files_of(img)
    for applet in ("sh", "echo", "sleep", "top", "ls", "cat", "id", "hostname", "pidof", "grep", "touch",
                   "netstat", "mount", "ping", "brctl", "chmod", "mkdir", "httpd", "wget"):
        info, _ = fs[f"bin/{applet}"]
        assert info.islnk() and info.linkname == "bin/busybox", applet
    for tool in tools.extra_bins:  # pgrep, ipcs: not busybox applets in Debian's build
        assert fs[tool][0].isfile()
    for lib in set().union(*(images.ldd_closure(b) for b in [tools.busybox, *tools.extra_bins.values()])):
        assert fs[lib][0].isfile(), lib
    assert fs["tmp"][0].mode == 0o1777


def test_dynamic_busybox_when_the_package_is_available(built) -> None:
    tools, _ = built
    if not tools.dynamic_busybox:
        pytest.skip("Debian's busybox package could not be downloaded here: " + "; ".join(tools.notes))
    out = subprocess.run(["file", "-L", str(tools.busybox)], capture_output=True, text=True).stdout
    assert "dynamically linked" in out
    assert "lib64/ld-linux-x86-64.so.2" in images.ldd_closure(tools.busybox) or images.go_arch() != "amd64"


def test_web_server_images(built) -> None:
    _, by_ref = built
    nginx = by_ref[E2E + "nginx:1.14-2"]
    cfg = config_of(nginx)["config"]
    assert cfg["Cmd"] == ["nginx", "-g", "daemon off;"] and "80/tcp" in cfg["ExposedPorts"]
    assert "listen       80;" in text(nginx, "etc/nginx/conf.d/default.conf")
    assert "Welcome to nginx!" in text(nginx, "usr/share/nginx/html/index.html")
    assert files_of(nginx)["usr/sbin/nginx"][0].mode == 0o755
    hostnet = by_ref[CRT + f"hostnet-nginx-{images.go_arch()}:latest"]
    assert "listen       12003;" in text(hostnet, "etc/nginx/conf.d/default.conf")
    httpd = by_ref[E2E + "httpd:2.4.39-4"]
    assert config_of(httpd)["config"]["Cmd"] == ["httpd-foreground"]
    assert "It works!" in text(httpd, "usr/local/apache2/htdocs/index.html")
    assert "httpd" in text(httpd, "usr/local/bin/httpd-foreground")


def test_nonewprivs_helper_is_setuid_root(built) -> None:
    _, by_ref = built
    img = by_ref[E2E + "nonewprivs:1.3"]
    info, _ = files_of(img)["usr/local/bin/nnp"]
    assert info.mode == 0o4755 and (info.uid, info.gid) == (0, 0)
    assert config_of(img)["config"]["Entrypoint"] == ["/usr/local/bin/nnp"]


def test_tag_sets_share_or_differ_as_upstream(built) -> None:
    _, by_ref = built
    digest = {ref: img.image.digest for ref, img in by_ref.items()}
    assert len({digest[CRT + f"test-image-tags:{t}"] for t in (1, 2, 3)}) == 1
    assert len({digest[CRT + f"test-image-{n}:latest"] for n in (1, 2, 3)}) == 3
    assert digest[CRT + "test-image-tag:test"] == digest[CRT + "test-image-tag:all"]
    assert digest["registry.k8s.io/pause:3.9"] == digest["k8s.gcr.io/pause:3.9"]
    pause = config_of(by_ref["k8s.gcr.io/pause:3.9"])["config"]
    assert pause["Entrypoint"] == ["/pause"] and pause["User"] == "65535:65535"


def test_builds_are_reproducible(built) -> None:
    tools, by_ref = built
    again = {ref: img.image.digest for img in images.catalogue(tools) for ref in img.refs}
    assert again == {ref: img.image.digest for ref, img in by_ref.items()}


# ---- running the images' binaries ---------------------------------------------------------

def extract(img: images.TestImage, root: Path) -> None:
    one = manifest_of(img)
    for desc in json.loads(one.manifest)["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(one.blobs[desc["digest"]]))) as tar:
            tar.extractall(root, numeric_owner=True, filter="fully_trusted")
    # A container runtime provides /dev; the shell needs /dev/null for background jobs.
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.fixture
def rootfs() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="crispy-ctroot-"))
    root.chmod(0o755)  # as an image root: the specs' uids must reach their binaries
    yield root
    shutil.rmtree(root, ignore_errors=True)


def clean_signals() -> None:
    """What a container runtime gives its processes: no blocked signals and
    default dispositions. Earlier tests in the same pytest process may have
    left a mask behind, which exec would hand down (SIGTERM never arriving)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


def chrooted(root: Path, uid: int = 0, no_new_privs: bool = False):
    def enter() -> None:
        clean_signals()
        os.chroot(root)
        os.chdir("/")
        if no_new_privs:
            PR_SET_NO_NEW_PRIVS = 38
            assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        if uid:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
    return enter


@pytest.mark.integration
def test_default_image_runs_its_tools_in_a_chroot(built, rootfs: Path) -> None:
    _, by_ref = built
    extract(by_ref[E2E + "busybox:1.29-2"], rootfs)
    out = subprocess.run(["/bin/sh", "-c", "echo -n hello; id -nu; pgrep -V >/dev/null && echo pgrep-ok; "
                          "ipcs -V >/dev/null && echo ipcs-ok; ls -A /bin/ls"],
                         preexec_fn=chrooted(rootfs), capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["helloroot", "pgrep-ok", "ipcs-ok", "/bin/ls"]


@pytest.mark.integration
def test_nnp_reports_euid_zero_unless_no_new_privs(built, rootfs: Path) -> None:
    _, by_ref = built
    extract(by_ref[E2E + "nonewprivs:1.3"], rootfs)
    escalated = subprocess.run(["/usr/local/bin/nnp"], preexec_fn=chrooted(rootfs, uid=1000),
                               capture_output=True, text=True, timeout=30)
    assert escalated.stdout == "Effective uid: 0\n"
    confined = subprocess.run(["/usr/local/bin/nnp"], preexec_fn=chrooted(rootfs, uid=1000, no_new_privs=True),
                              capture_output=True, text=True, timeout=30)
    assert confined.stdout == "Effective uid: 1000\n"


@pytest.mark.integration
def test_nginx_stand_in_looks_like_nginx(built, rootfs: Path) -> None:
    """In private network, mount and pid namespaces: serves the page on :80,
    writes its pid file, is named nginx and titled 'master process'."""
    _, by_ref = built
    extract(by_ref[E2E + "nginx:1.14-2"], rootfs)
    script = (
        "mount -t proc proc /proc; ip link set lo up; "
        "nginx -g 'daemon off;' 2>/tmp/nginx.err & "
        "i=0; while [ ! -s /var/run/nginx.pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
        "pid=$(cat /var/run/nginx.pid); "
        "i=0; until wget -qO /tmp/page http://127.0.0.1:80/ 2>/tmp/wget.err || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done; "
        "echo \"pid=$pid pidof=$(pidof nginx) comm=$(cat /proc/$pid/comm)\"; "
        "tr '\\0' ' ' </proc/$pid/cmdline; echo; cat /tmp/page; "
        "kill $pid; wait; [ ! -e /var/run/nginx.pid ] && echo pidfile-removed; umount /proc"
    )
    out = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "chroot", str(rootfs), "/bin/sh", "-c", script],
                         capture_output=True, text=True, timeout=60, preexec_fn=clean_signals)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    fields = dict(kv.split("=", 1) for kv in lines[0].split())
    assert fields["comm"] == "nginx"
    assert fields["pid"] in fields["pidof"].split() or fields["pidof"] == fields["pid"]
    assert lines[1].startswith("nginx: master process nginx -g daemon off;")
    assert "Welcome to nginx!" in out.stdout
    assert lines[-1] == "pidfile-removed"


@pytest.mark.integration
def test_httpd_stand_in_serves_and_logs_its_name(built, rootfs: Path) -> None:
    _, by_ref = built
    extract(by_ref[E2E + "httpd:2.4.39-4"], rootfs)
    # httpd-foreground execs httpd, so $! is the server. In its own pid namespace
    # (--kill-child) nothing outlives the test even if the script goes wrong.
    script = ("ip link set lo up; httpd-foreground 2>/tmp/log & pid=$!; "
              "i=0; until wget -qO- http://127.0.0.1:80/ 2>/tmp/wget.err || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done; "
              "cat /tmp/log; kill $pid; wait")
    out = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "chroot", str(rootfs), "/bin/sh", "-c", script],
                         capture_output=True, text=True, timeout=60, preexec_fn=clean_signals,
                         env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    assert "It works!" in out.stdout, out.stdout + out.stderr
    assert "httpd: serving" in out.stdout


@pytest.mark.integration
def test_masking_one_applet_leaves_the_shell_working(built, rootfs: Path) -> None:
    """The MaskedPaths spec binds /dev/null over /bin/ls and expects the shell
    to report 'ls: Permission denied' (applets are hard links, not symlinks)."""
    _, by_ref = built
    extract(by_ref[E2E + "busybox:1.29-2"], rootfs)
    out = subprocess.run(["unshare", "--mount", "--fork", "/bin/sh", "-c",
                          f"mount --bind /dev/null {rootfs}/bin/ls && "
                          f"chroot {rootfs} /bin/sh -c ls; echo rc=$?"],
                         capture_output=True, text=True, timeout=30, preexec_fn=clean_signals,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert out.stderr == "/bin/sh: ls: Permission denied\n"
    assert out.stdout.startswith("rc=") and out.stdout != "rc=0\n"
