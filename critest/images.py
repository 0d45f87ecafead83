"""Offline builds of every image the upstream critest suite pulls.

Each image reproduces what the specs observe of its upstream counterpart
(entrypoint, USER, /etc/passwd and /etc/group, ports, served content, process
names) from Debian packages: Debian's dynamically linked `busybox` (fetched
with `apt-get download`, not installed, because it conflicts with
`busybox-static`) plus the shared libraries `ldd` names, procps' `pgrep` and
util-linux's `ipcs` (upstream busybox has those applets, Debian's does not),
and three small C helpers from critest/helpers/ compiled with gcc at run time
(the nginx stand-in around busybox httpd, the setuid `nnp`, and `/pause`).

critest/README.md lists the images and what each spec expects of them.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests import imagebuild
from tests.imagebuild import Dir, Entry, File, Hardlink, Index

HELPERS_DIR = Path(__file__).parent / "helpers"
STATIC_BUSYBOX = Path("/bin/busybox")
CACHE_DIR = Path(os.environ.get("CRISPY_CRITEST_CACHE", "/var/cache/crispy-critest"))

E2E = "registry.k8s.io/e2e-test-images/"
CRI_TOOLS = "gcr.io/k8s-staging-cri-tools/"

# Registries whose images the suite names; each gets the loopback registry as mirror.
MIRRORED_HOSTS = ("registry.k8s.io", "k8s.gcr.io", "gcr.io")

# References pinned by an upstream digest: an image built here cannot have it,
# so the specs pulling them fail for a reason outside crispy.
UNREPRODUCIBLE = {
    CRI_TOOLS + "test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf":
        "pinned to an upstream manifest digest that an offline build cannot reproduce",
}

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The account tables of the upstream busybox image the test images derive from.
BUSYBOX_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""

NGINX_INDEX = b"""<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>crispy critest stand-in: busybox httpd behind an nginx-shaped master process.</p>
</body>
</html>
"""
HTTPD_INDEX = b"<html><body><h1>It works!</h1></body></html>\n"

HTTPD_FOREGROUND = b"""#!/bin/sh
# Stand-in for the httpd image's entrypoint: busybox httpd in the foreground.
# The suite looks for "httpd" in the container log, as Apache prints at start.
echo "httpd: serving /usr/local/apache2/htdocs on port 80 (busybox httpd)" >&2
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
"""


def go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x"}.get(machine, machine)


# ---- the tools the images are made of -------------------------------------------------

@dataclass
class Toolbox:
    """Host files the images are assembled from."""
    busybox: Path
    dynamic_busybox: bool
    helpers: dict[str, bytes]                 # helper name -> static binary
    extra_bins: dict[str, Path] = field(default_factory=dict)  # image path -> host binary
    notes: list[str] = field(default_factory=list)


def ldd_closure(binary: Path) -> dict[str, Path]:
    """Image path -> host file for every shared object `binary` loads,
    the dynamic loader included (empty for a static binary)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if out.returncode != 0 or "not a dynamic executable" in out.stdout + out.stderr:
        return {}
    libs: dict[str, Path] = {}
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            path = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
        else:
            path = line.split(" (", 1)[0].strip()
        if not path.startswith("/"):
            continue  # linux-vdso.so.1 lives in the kernel
        libs[path.lstrip("/")] = Path(os.path.realpath(path))
    return libs


def fetch_dynamic_busybox(cache: Path = CACHE_DIR) -> Path | None:
    """Debian's dynamically linked busybox, extracted from its package into
    `cache`; None when the package cannot be had (no apt source reachable)."""
    target = cache / "busybox-deb" / "bin" / "busybox"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        def download() -> bool:
            return subprocess.run(["apt-get", "download", "-qq", "busybox"], cwd=tmp,
                                  capture_output=True).returncode == 0
        if not download():
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            if not download():
                return None
        (deb,) = Path(tmp).glob("busybox_*.deb")
        extracted = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
        final = cache / "busybox-deb"
        shutil.rmtree(final, ignore_errors=True)
        extracted.rename(final)
    return target if target.exists() else None


def compile_helpers(out_dir: Path) -> dict[str, bytes]:
    """Builds critest/helpers/*.c as static binaries with gcc."""
    out_dir.mkdir(parents=True, exist_ok=True)
    helpers = {}
    for src in sorted(HELPERS_DIR.glob("*.c")):
        exe = out_dir / src.stem
        subprocess.run(["gcc", "-static", "-Os", "-s", "-Wall", "-o", str(exe), str(src)],
                       check=True, capture_output=True)
        helpers[src.stem] = exe.read_bytes()
    return helpers


def prepare_toolbox(work: Path, cache: Path = CACHE_DIR) -> Toolbox:
    notes = []
    busybox = fetch_dynamic_busybox(cache)
    dynamic = busybox is not None
    if busybox is None:
        busybox = STATIC_BUSYBOX
        notes.append("Debian's dynamic busybox package could not be downloaded: images use busybox-static, "
                     "whose shell runs its own applets before $PATH (some specs may trip over it)")
    extra = {}
    for image_path, host in (("usr/bin/pgrep", "/usr/bin/pgrep"), ("usr/bin/ipcs", "/usr/bin/ipcs")):
        if Path(host).exists():
            extra[image_path] = Path(host)
        else:
            notes.append(f"{host} is missing on this host: images have no {Path(host).name}")
    return Toolbox(busybox=busybox, dynamic_busybox=dynamic, helpers=compile_helpers(work / "helpers"),
                   extra_bins=extra, notes=notes)


# ---- root filesystems ------------------------------------------------------------------

def add(entries: dict[str, Entry], path: str, entry: Entry) -> None:
    """Adds `entry` at `path`, creating missing parent directories first so
    that every layer lists a directory before its contents."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        entries.setdefault(parent, Dir())
    entries[path.strip("/")] = entry


def busybox_rootfs(tools: Toolbox, passwd: str = BUSYBOX_PASSWD, group: str = BUSYBOX_GROUP) -> dict[str, Entry]:
    """The upstream busybox image's shape: /bin/busybox with a hard link per
    applet, its libraries, the account tables, the usual empty directories."""
    entries: dict[str, Entry] = {}
    for d, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755), ("proc", 0o755),
                    ("root", 0o700), ("sys", 0o755), ("tmp", 0o1777), ("usr", 0o755), ("usr/bin", 0o755),
                    ("usr/sbin", 0o755), ("usr/local", 0o755), ("usr/local/bin", 0o755), ("var", 0o755),
                    ("var/run", 0o755), ("var/www", 0o755), ("var/spool", 0o755), ("var/spool/mail", 0o755)):
        entries[d] = Dir(mode)
    add(entries, "bin/busybox", File(tools.busybox.read_bytes(), 0o755))
    applets = subprocess.run([str(tools.busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    # Hard links, as in the upstream image: a spec masks /bin/ls with a bind
    # mount, which through a symlink would mask busybox itself.
    for applet in applets:
        if applet != "busybox":
            add(entries, f"bin/{applet}", Hardlink("bin/busybox", 0o755))
    binaries = [tools.busybox, *tools.extra_bins.values()]
    for image_path, host in tools.extra_bins.items():
        add(entries, image_path, File(host.read_bytes(), 0o755))
    for binary in binaries:
        for image_path, host in ldd_closure(binary).items():
            if image_path not in entries:
                add(entries, image_path, File(host.read_bytes(), 0o755))
    add(entries, "etc/passwd", File(passwd.encode()))
    add(entries, "etc/group", File(group.encode()))
    add(entries, "etc/shadow", File(b"".join(f"{line.split(':')[0]}:*:::::::\n".encode()
                                             for line in passwd.splitlines() if line), 0o640))
    return entries


def image(layers: list[dict[str, Entry]], config: dict) -> Index:
    """A one-platform Docker manifest list, as upstream publishes them."""
    arch = go_arch()
    built = imagebuild.build_image([imagebuild.make_layer(layer) for layer in layers], config=config,
                                   docker=True, arch=arch)
    return imagebuild.build_index([(built, {"os": "linux", "architecture": arch})], docker=True)


def busybox_config(**extra: object) -> dict:
    cfg: dict = {"Cmd": ["sh"], "Env": [PATH_ENV]}
    cfg.update(extra)
    return cfg


def nginx_layer(tools: Toolbox, port: int) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    add(entries, "usr/sbin/nginx", File(tools.helpers["nginx"], 0o755))
    add(entries, "etc/nginx/conf.d/default.conf", File(
        f"server {{\n    listen       {port};\n    server_name  localhost;\n"
        f"    location / {{\n        root   /usr/share/nginx/html;\n        index  index.html;\n    }}\n}}\n".encode()))
    add(entries, "usr/share/nginx/html/index.html", File(NGINX_INDEX))
    add(entries, "var/cache/nginx", Dir())
    add(entries, "etc/passwd",
        File((BUSYBOX_PASSWD + "nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n").encode()))
    add(entries, "etc/group", File((BUSYBOX_GROUP + "nginx:x:101:nginx\n").encode()))
    return entries


def nginx_config(port: int) -> dict:
    return {"Cmd": ["nginx", "-g", "daemon off;"], "Env": [PATH_ENV],
            "ExposedPorts": {f"{port}/tcp": {}}, "StopSignal": "SIGTERM"}


# ---- the catalogue --------------------------------------------------------------------

@dataclass
class TestImage:
    name: str
    refs: list[str]          # upstream references this image answers to
    image: Index
    stands_for: str          # what upstream image/behaviour it reproduces


def split_ref(ref: str) -> tuple[str, str, str]:
    """'host/path:tag' -> (host, path, tag); tag defaults to latest."""
    host, rest = ref.split("/", 1)
    path, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    return host, path, tag or "latest"


def catalogue(tools: Toolbox) -> list[TestImage]:
    base = busybox_rootfs(tools)
    arch = go_arch()
    out: list[TestImage] = []

    def single(name: str, refs: list[str], layers: list[dict[str, Entry]], config: dict, stands_for: str) -> None:
        out.append(TestImage(name, refs, image(layers, config), stands_for))

    single("busybox", [E2E + "busybox:1.29-2"], [base], busybox_config(),
           "e2e busybox: the default container image (sh, coreutils applets, pgrep, ipcs)")
    single("nginx", [E2E + "nginx:1.14-2"], [base, nginx_layer(tools, 80)], nginx_config(80),
           "e2e nginx: web server on :80, process 'nginx', /var/run/nginx.pid, 'master process' title")
    single("hostnet-nginx", [CRI_TOOLS + f"hostnet-nginx-{arch}:latest"], [base, nginx_layer(tools, 12003)],
           {**nginx_config(12003), "StopSignal": "SIGQUIT"},
           "cri-tools hostnet-nginx: the nginx stand-in listening on :12003")

    httpd: dict[str, Entry] = {}
    add(httpd, "usr/local/apache2/htdocs/index.html", File(HTTPD_INDEX))
    add(httpd, "usr/local/bin/httpd-foreground", File(HTTPD_FOREGROUND, 0o755))
    single("httpd", [E2E + "httpd:2.4.39-4"], [base, httpd],
           {"Cmd": ["httpd-foreground"], "WorkingDir": "/usr/local/apache2",
            "Env": ["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HTTPD_PREFIX=/usr/local/apache2"],
            "ExposedPorts": {"80/tcp": {}}},
           "e2e httpd: serves 'It works!' on :80, logs a line naming httpd")

    nnp: dict[str, Entry] = {}
    add(nnp, "usr/local/bin/nnp", File(tools.helpers["nnp"], 0o4755))
    single("nonewprivs", [E2E + "nonewprivs:1.3"], [base, nnp],
           {"Entrypoint": ["/usr/local/bin/nnp"], "Env": [PATH_ENV]},
           "e2e nonewprivs: setuid-root nnp printing 'Effective uid: N'")

    pause: dict[str, Entry] = {}
    add(pause, "pause", File(tools.helpers["pause"], 0o755))
    single("pause", ["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"], [pause],
           {"Entrypoint": ["/pause"], "User": "65535:65535", "Env": [PATH_ENV]},
           "pause 3.9: one image under two registries (same digest)")

    for name, user in (("test-image-user-uid", "1002"), ("test-image-user-username", "www-data"),
                       ("test-image-user-uid-group", "1003:1004"),
                       ("test-image-user-username-group", "www-data:1004")):
        single(name, [CRI_TOOLS + name + ":latest"], [base], busybox_config(User=user),
               f"cri-tools image-user: USER {user}")

    grouped_passwd = BUSYBOX_PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
    grouped_group = BUSYBOX_GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
    home: dict[str, Entry] = {}
    add(home, "home/default-user", Dir(0o755, 1000, 1000))
    single("test-image-predefined-group", [CRI_TOOLS + "test-image-predefined-group:latest"],
           [busybox_rootfs(tools, grouped_passwd, grouped_group), home], busybox_config(User="1000"),
           "cri-tools image-predefined-group: USER 1000, member of gid 50000 in /etc/group")

    def marker(file_name: str) -> dict[str, Entry]:
        layer: dict[str, Entry] = {}
        add(layer, file_name, File(b""))
        return layer

    for name in ("test-image-1", "test-image-2", "test-image-3", "test-image-latest", "test-image-digest"):
        single(name, [CRI_TOOLS + name + ":latest"], [base, marker(name)], busybox_config(),
               "cri-tools image-test: busybox plus a file named after the image (images differ)")
    single("test-image-tags", [CRI_TOOLS + f"test-image-tags:{t}" for t in (1, 2, 3)],
           [base, marker("same-image")], busybox_config(), "cri-tools test-image-tags: one image, three tags")
    single("test-image-tag", [CRI_TOOLS + "test-image-tag:test", CRI_TOOLS + "test-image-tag:all"],
           [base, marker("test-image-tag")], busybox_config(), "cri-tools test-image-tag: one image, tags test and all")
    return out


def push_all(registry, images: list[TestImage]) -> dict[str, str]:
    """Pushes every image under each of its references' paths; returns
    reference -> manifest digest. `registry` is a tests.registry.LocalRegistry."""
    pushed = {}
    for img in images:
        for ref in img.refs:
            _, path, tag = split_ref(ref)
            pushed[ref] = registry.push(path, tag, img.image)
    return pushed
