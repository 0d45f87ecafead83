"""`make bench`: crispy and containerd side by side, one run, one client.

    python -m bench.run [--iterations N] [--scenarios a,b] [--runtimes crispy,containerd-runc,containerd-crun]

Starts a loopback registry with the bench images, every runtime on private
temp roots with the same CNI conflist, runs the scenarios interleaved, writes
bench/results/<date>.{json,md,png}, and stops and removes everything it
started (pods through CRI first, then daemons, bridge, cgroups, mounts, and
the hugetlb mount it may have made for crun).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import hostprep, network, report
from bench.images import push_all
from bench.runner import run_scenario
from bench.scenarios import REGISTRY
from bench.scenarios.base import Context
from bench.target import KNOWN_TARGETS, Target, describe_error
from bench.workload import CGROUP_ROOT_NAME
from runtime import host
from tests.registry import LocalRegistry

DEFAULT_RUNTIMES = "crispy,containerd-runc,containerd-crun"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=20, help="timed iterations per scenario and runtime (default 20)")
    p.add_argument("--scenarios", default=",".join(REGISTRY),
                   help=f"comma-separated, from: {', '.join(REGISTRY)} (default all)")
    p.add_argument("--runtimes", default=DEFAULT_RUNTIMES,
                   help=f"comma-separated, from: {', '.join(KNOWN_TARGETS)} (default {DEFAULT_RUNTIMES})")
    p.add_argument("--pods", type=int, default=100, help="running pods in the memory scenario (default 100)")
    p.add_argument("--churn-pods-per-worker", type=int, default=2,
                   help="pods each concurrent client starts and removes per churn iteration (default 2)")
    p.add_argument("--move-hugetlb", choices=("auto", "no"), default="auto",
                   help="auto: when a crun runtime is asked for and this hybrid host has hugetlb in its v2 tree, "
                        "mount a v1 hugetlb hierarchy for the run and unmount it after; no: never (crun runtimes "
                        "are then reported as failed)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go (default bench/results)")
    args = p.parse_args(argv)
    args.scenario_list = [s for s in args.scenarios.split(",") if s]
    args.runtime_list = [r for r in args.runtimes.split(",") if r]
    for s in args.scenario_list:
        if s not in REGISTRY:
            p.error(f"unknown scenario {s!r}; known: {', '.join(REGISTRY)}")
    for r in args.runtime_list:
        if r not in KNOWN_TARGETS:
            p.error(f"unknown runtime {r!r}; known: {', '.join(KNOWN_TARGETS)}")
    if args.iterations < 1 or args.pods < 1 or args.churn_pods_per_worker < 1:
        p.error("--iterations, --pods and --churn-pods-per-worker must be at least 1")
    return args


def host_summary() -> str:
    layout = host.detect_cgroup_layout()
    return (f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs, "
            f"cgroups {layout.mode}")


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (it starts container runtimes)", file=sys.stderr)
        return 2
    # Restored on the way out: a caller running main() in-process (tests) must
    # not be left ignoring SIGTERM, which its own children would inherit.
    saved_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    started = time.gmtime()
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    base = Path(tempfile.mkdtemp(prefix="crispy-bench-", dir="/tmp"))
    base.chmod(0o711)  # see CrispyProcess.prepare: user-namespaced roots must be reachable
    changes = hostprep.HostChanges()
    registry: LocalRegistry | None = None
    targets: list[Target] = []
    net = network.BenchNetwork()
    cleanup_notes: list[str] = []
    all_results: dict[str, dict] = {}
    try:
        say(f"bench: temp root {base}")
        registry = LocalRegistry().start()
        say(f"bench: building and pushing images to {registry.host}")
        images = push_all(registry, with_big=any(s.startswith("pull") for s in args.scenario_list))
        conf_dir = base / "cni"
        network.write_conf_dir(conf_dir, net, base / "cni-ipam")
        wants_crun = any(KNOWN_TARGETS[r][1] == "crun" for r in args.runtime_list)
        blocker = hostprep.crun_blocker()
        if wants_crun and blocker and args.move_hugetlb == "auto":
            try:
                changes.move_hugetlb()
                say(f"bench: HOST CHANGE: {changes.log[-1]} (undone at the end)")
            except subprocess.CalledProcessError as e:
                say(f"bench: could not mount a v1 hugetlb hierarchy ({e.stderr.strip()}); crun runtimes will fail")
        for name in args.runtime_list:
            kind, oci = KNOWN_TARGETS[name]
            t = Target(name, kind, oci, base / name)
            if oci == "crun" and hostprep.crun_blocker():
                t.start_error = f"crun cannot run on this host: {hostprep.crun_blocker()} (see --move-hugetlb)"
            else:
                t.start(str(conf_dir), network.CNI_BIN_DIR, registry.host, images.pause)
                if kind == "containerd" and t.start_error is None:
                    try:  # containerd pulls its sandbox image on first use; not part of any timing
                        t.client.pull_image(images.pause)
                    except Exception as e:  # noqa: BLE001
                        t.start_error = f"could not pull the sandbox image: {describe_error(e)}"
            say(f"bench: {name}: " + (t.version or "") + (f" — {t.start_error}" if t.start_error else ""))
            targets.append(t)
        ctx = Context(images=images, iterations=args.iterations, pods=args.pods,
                      churn_pods_per_worker=args.churn_pods_per_worker)
        for sname in args.scenario_list:
            scenario = REGISTRY[sname]
            say(f"bench: scenario {sname} ({scenario.title}), {scenario.iterations(ctx)} iteration(s)")
            t0 = time.monotonic()
            res = run_scenario(scenario, ctx, targets, say)
            say(f"bench: scenario {sname} took {time.monotonic() - t0:.0f} s")
            all_results[sname] = report.scenario_entry(scenario.title, scenario.metrics, res)
    except KeyboardInterrupt:
        say("bench: interrupted; cleaning up and writing what was measured")
    except Exception as e:  # noqa: BLE001 - the environment failed; clean up, then say why
        say(f"bench: could not go on: {describe_error(e)}; cleaning up and writing what was measured")
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for t in targets:
            for problem in t.stop():
                cleanup_notes.append(f"{t.name}: {problem}")
        failed = hostprep.remove_cgroup_tree(CGROUP_ROOT_NAME)
        cleanup_notes += [f"cgroup left behind (still populated): {d}" for d in failed]
        leaked = network.leftover_veths(net.bridge)
        if leaked:
            cleanup_notes.append(f"veths still on {net.bridge}: {', '.join(leaked)}")
        network.remove_bridge(net.bridge)
        cleanup_notes += [f"iptables rule left by CNI (not removed): {r}" for r in network.leftover_rules(net)]
        changes.undo()
        if registry is not None:
            registry.stop()
        shutil.rmtree(base, ignore_errors=True)
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)
    for note in cleanup_notes:
        say(f"bench: cleanup: {note}")
    if changes.log:
        say("bench: host changes: " + "; ".join(changes.log))
    if not all_results:
        say("bench: no scenario ran; nothing written")
        return 1
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", started),
        "command": "make bench" + (f" ARGS={shlex.quote(' '.join(argv))}" if argv else ""),
        "host": {"summary": host_summary(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "settings": {"iterations": args.iterations, "pods": args.pods,
                     "churn_pods_per_worker": args.churn_pods_per_worker,
                     "network": {"bridge": net.bridge, "subnet": net.subnet}},
        "runtimes": {t.name: {"version": t.version, "oci_runtime": t.oci_runtime, "error": t.start_error,
                               "notes": [n for n in t.notes if n != t.start_error]}
                     for t in targets},
        "host_changes": changes.log,
        "cleanup": cleanup_notes,
        "scenarios": all_results,
    }
    results["derived"] = {"cni_share": report.cni_share(all_results),
                          "cni_share_measured": report.cni_share_measured(all_results)}
    stem = args.out_dir / time.strftime("%Y-%m-%d-%H%M", started)
    report.write_json(results, stem.with_suffix(".json"))
    stem.with_suffix(".md").write_text(report.markdown(results))
    drew = report.chart(results, stem.with_suffix(".png"))
    say(report.markdown(results))
    say(f"bench: wrote {stem}.json, {stem}.md" + (f", {stem}.png" if drew else " (no chart: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
