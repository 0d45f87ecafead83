"""`make critest`: the upstream critest suite against a throwaway crispy, offline.

Builds the suite's images (critest/images.py), pushes them to a loopback
docker-registry, starts crispy on temporary roots with that registry as the
mirror of registry.k8s.io, k8s.gcr.io and gcr.io, runs `critest` from PATH,
writes the JUnit report and a summary under critest/results/, and stops
everything it started. Exits non-zero only when the harness itself fails,
not when specs fail.

    python -m critest.run [--results DIR] [--keep] [critest flags...]

Any flag it does not know goes to critest, e.g.
`--ginkgo.focus='Image Manager'`, `--ginkgo.skip=...`, `--parallel=2`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cri.client import CRIClient
from cri.proto import api_pb2 as pb
from critest import images, summary
from runtime.cni import default_network
from tests.daemon_proc import DaemonProcess
from tests.registry import LocalRegistry

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "critest" / "results"

WHERE_TO_GET = """\
critest is not on PATH, so there is nothing to run (this is not an error).
Get it from a cri-tools release (kubernetes-sigs/cri-tools on GitHub:
critest-<version>-linux-<arch>.tar.gz, put `critest` in /usr/local/bin),
or build it from a cri-tools checkout with Go: `make critest`, or
`go test -c -o /usr/local/bin/critest ./cmd/critest`.
Then run `make critest` again. critest/README.md has the details."""


@dataclass
class Run:
    """Everything one run started, so that cleanup can stop exactly that."""
    base: Path
    cgroup_parent: str
    bridge: str = ""
    subnet: str = ""
    registry: LocalRegistry | None = None
    daemon: DaemonProcess | None = None
    notes: list[str] = field(default_factory=list)


def crispy_config(run: Run) -> str:
    assert run.registry is not None
    mirror = run.registry.url
    lines = ["[runtime]", f'default_cgroup_parent = "{run.cgroup_parent}"', "",
             "[cni]", f'conf_dir = "{run.base / "cni"}"']
    lines += [f'default_subnet = "{run.subnet}"', ""] if run.subnet else [""]
    for host in images.MIRRORED_HOSTS:
        # mirrors_only: an image the loopback registry lacks (the digest-pinned
        # spec) must fail here, not send lookups to the real registry.
        lines += [f'[registries."{host}"]', f'mirrors = ["{mirror}"]', "mirrors_only = true", ""]
    lines += [f'[registries."{run.registry.host}"]', "insecure = true", ""]
    return "\n".join(lines)


def install_network(run: Run) -> None:
    """crispy's default pod network (what `crispy cni-install` writes), on a
    bridge, subnet and IPAM directory of this run's own so that it cannot
    collide with another crispy on the host; no masquerading, pods have no
    outside world to reach."""
    run.bridge = f"crct{secrets.token_hex(3)}"
    run.subnet = f"10.201.{secrets.randbelow(256)}.0/24"
    default_network.install(str(run.base / "cni"), [run.subnet], name="crispy-critest", bridge=run.bridge,
                            data_dir=str(run.base / "ipam"), ip_masq=False)


def critest_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        if "critest version" in line:
            return line.split("critest version", 1)[1].strip(" :").split("PASS")[0].strip()
    return "unknown"


def crispy_revision() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    rev = out.stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return rev + (" + uncommitted changes" if dirty else "")


def run_critest(binary: str, socket: str, junit: Path, log_path: Path, extra: list[str]) -> int:
    """Runs the suite, echoing its output and keeping a copy."""
    endpoint = f"unix://{socket}"
    cmd = [binary, f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}",
           f"--ginkgo.junit-report={junit}", "--ginkgo.no-color", *extra]
    print("+ " + " ".join(cmd), flush=True)
    with open(log_path, "wb") as log:
        # Its own directory as cwd: critest looks for a crictl.yaml beside itself and in cwd.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=junit.parent)
        assert proc.stdout is not None
        try:
            for chunk in iter(lambda: proc.stdout.readline(), b""):
                log.write(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # ginkgo then runs cleanup nodes and writes the report
            proc.wait(60)
            raise
        return proc.wait()


# ---- cleanup ---------------------------------------------------------------------------

MAX_CLEANUP_ERRORS = 5


def remove_everything(client: CRIClient, notes: list[str]) -> None:
    """Stops and removes every container and pod the suite left behind."""
    errors: list[str] = []
    try:
        containers = list(client.runtime.ListContainers(pb.ListContainersRequest(), timeout=60).containers)
    except grpc.RpcError as e:
        containers = []
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            notes.append(f"cleanup: ListContainers failed: {e.code().name}: {e.details()}")
    for c in containers:
        for step in (lambda cid=c.id: client.stop_container(cid, 0), lambda cid=c.id: client.remove_container(cid)):
            try:
                step()
            except grpc.RpcError as e:
                errors.append(f"cleanup: container {c.id[:12]}: {e.code().name}: {e.details()}")
    try:
        pods = client.list_pod_sandboxes()
    except grpc.RpcError as e:
        pods = []
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            notes.append(f"cleanup: ListPodSandbox failed: {e.code().name}: {e.details()}")
    if containers or pods:
        notes.append(f"cleanup: the suite left {len(pods)} pod(s) and {len(containers)} container(s) behind")
    for p in pods:
        for step in (lambda pid=p.id: client.stop_pod_sandbox(pid), lambda pid=p.id: client.remove_pod_sandbox(pid)):
            try:
                step()
            except grpc.RpcError as e:
                errors.append(f"cleanup: pod {p.id[:12]}: {e.code().name}: {e.details()}")
    notes += errors[:MAX_CLEANUP_ERRORS]
    if len(errors) > MAX_CLEANUP_ERRORS:
        notes.append(f"cleanup: ... and {len(errors) - MAX_CLEANUP_ERRORS} more such error(s), see crispy.log")


def cgroup_dirs(parent: str) -> list[Path]:
    """Every cgroup directory at or under `parent`, in every hierarchy, deepest first."""
    found = []
    root = Path("/sys/fs/cgroup")
    tops = [root / parent.strip("/")]
    if root.exists():
        tops += [d / parent.strip("/") for d in root.iterdir() if d.is_dir() and not d.is_symlink()]
    for top in tops:
        if top.is_dir():
            found += sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            found.append(top)
    return list(dict.fromkeys(found))


def sweep(run: Run) -> None:
    """What crispy should have cleaned up but did not: processes in our
    cgroup parent, mounts under our temporary roots, the cgroups. Each one
    found is a crispy leak and is noted in the summary."""
    pids: set[int] = set()
    for d in cgroup_dirs(run.cgroup_parent):
        try:
            pids |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
        except OSError:
            pass
    base = str(run.base)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if base.encode() in (proc / "cmdline").read_bytes():
                    pids.add(int(proc.name))
            except OSError:
                pass
    pids.discard(os.getpid())
    if run.daemon and run.daemon.proc:
        pids.discard(run.daemon.proc.pid)
    if pids:
        run.notes.append(f"leak: {len(pids)} process(es) still running after crispy stopped; killed them")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4].replace("\\040", " ")
        if mountpoint == base or mountpoint.startswith(base + "/"):
            mounts.append(mountpoint)
    if mounts:
        run.notes.append(f"leak: {len(mounts)} mount(s) under the temporary roots; unmounted them")
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
    if run.bridge and Path("/sys/class/net", run.bridge).exists():
        subprocess.run(["ip", "link", "del", run.bridge], capture_output=True)
    dirs = [d for d in cgroup_dirs(run.cgroup_parent)]
    leftover = 0
    for d in dirs:
        try:
            d.rmdir()
            leftover += d.name != Path(run.cgroup_parent).name
        except OSError:
            pass
    if leftover:
        run.notes.append(f"leak: {leftover} cgroup(s) under {run.cgroup_parent}; removed them")


def stop_all(run: Run) -> None:
    if run.daemon and run.daemon.proc:
        try:
            with CRIClient(run.daemon.socket, timeout=120) as client:
                remove_everything(client, run.notes)
        except Exception as e:  # noqa: BLE001 - cleanup must go on whatever broke
            run.notes.append(f"cleanup: could not talk to crispy: {e}")
        code = run.daemon.stop()
        if code not in (0, -signal.SIGTERM):
            run.notes.append(f"crispy exited {code} on SIGTERM")
    sweep(run)
    if run.registry:
        run.registry.stop()


# ---- main ------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m critest.run", description=__doc__.split("\n\n")[0],
                                     epilog="Other flags are passed to critest.")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="where junit.xml, summary.md/json, critest.log and crispy.log go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary roots (for debugging)")
    parser.add_argument("--critest", default=shutil.which("critest"), help="critest binary (default: from PATH)")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    if not args.critest:
        print(WHERE_TO_GET)
        return 0
    if os.geteuid() != 0:
        print("critest.run: crispy needs root; run as root", file=sys.stderr)
        return 2
    results: Path = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    # Before the stale results go: the committed summary is a tracked file,
    # and deleting it made every run report "uncommitted changes".
    revision = crispy_revision()
    for stale in ("junit.xml", "summary.md", "summary.json", "critest.log", "crispy.log"):
        (results / stale).unlink(missing_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)

    run = Run(base=Path(tempfile.mkdtemp(prefix="crispy-ct-", dir="/tmp")),
              cgroup_parent=f"/crispy-critest-{uuid.uuid4().hex[:8]}")
    # Searchable (not listable) like /: user-namespaced container roots
    # are reached from inside the user namespace (runtime/rootfs.py).
    os.chmod(run.base, 0o711)
    junit = results / "junit.xml"
    rc = None
    failure = ""
    busybox_kind = "?"
    try:
        print("critest.run: building the test images", flush=True)
        tools = images.prepare_toolbox(run.base / "build")
        busybox_kind = "Debian's dynamic busybox" if tools.dynamic_busybox else "busybox-static"
        run.notes += tools.notes
        catalogue = images.catalogue(tools)
        run.registry = LocalRegistry().start()
        pushed = images.push_all(run.registry, catalogue)
        print(f"critest.run: pushed {len(pushed)} references to {run.registry.url}", flush=True)

        install_network(run)
        run.daemon = DaemonProcess(run.base, config_text=crispy_config(run))
        run.daemon.start()
        with run.daemon.client() as client:
            version = client.version()
        print(f"critest.run: crispy {version.runtime_version} up on {run.daemon.socket}", flush=True)
        rc = run_critest(args.critest, run.daemon.socket, junit, results / "critest.log", extra)
    except KeyboardInterrupt:
        run.notes.append("interrupted")
    except Exception as e:  # noqa: BLE001 - reported below, after cleanup
        failure = f"{type(e).__name__}: {e}"
    finally:
        try:
            stop_all(run)
        finally:
            if run.daemon and run.daemon.log_path.exists():
                shutil.copy(run.daemon.log_path, results / "crispy.log")
            if args.keep:
                print(f"critest.run: kept {run.base}")
            else:
                shutil.rmtree(run.base, ignore_errors=True)

    if failure:
        print(f"critest.run: the harness failed before critest finished: {failure}", file=sys.stderr)
        return 1
    if not junit.exists():
        print(f"critest.run: critest wrote no JUnit report (exit {rc}); see {results / 'critest.log'}",
              file=sys.stderr)
        return 1
    s = summary.summarise(junit, images.UNREPRODUCIBLE)
    context = [
        f"{started:%Y-%m-%d %H:%M} UTC, critest {critest_version(args.critest)} (exit {rc}), crispy {revision}",
        f"critest flags: {' '.join(extra) or '(none)'}",
        f"images: built offline by critest/images.py ({busybox_kind}), served by a loopback "
        "docker-registry as mirror of " + ", ".join(images.MIRRORED_HOSTS),
        f"pod network: crispy's default network shape on bridge {run.bridge or '?'}, subnet {run.subnet or '?'}",
        *run.notes,
    ]
    (results / "summary.md").write_text(summary.markdown(s, context))
    (results / "summary.json").write_text(json.dumps({"context": context, **summary.as_dict(s)}, indent=1) + "\n")
    passed, failed, skipped, _ = s.spec_counts()
    print(f"\ncritest.run: specs: {passed} passed, {failed} failed ({len(s.environmental)} environmental), "
          f"{skipped} skipped; summary in {results / 'summary.md'}")
    if s.mismatches:
        print("critest.run: summary disagrees with the JUnit report: " + "; ".join(s.mismatches), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
