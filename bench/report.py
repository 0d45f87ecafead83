"""Turns a run's samples into the results JSON, a markdown table and a PNG
of the latency distributions, side by side per runtime."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import Summary, ratio


@dataclass
class RuntimeResult:
    """One runtime's outcome in one scenario."""
    error: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def is_crispy(name: str) -> bool:
    return name.startswith("crispy")


def scenario_entry(title: str, metrics: dict[str, Any], results: dict[str, RuntimeResult]) -> dict:
    """`metrics` maps metric name -> Metric (unit, better, title)."""
    entry: dict[str, Any] = {"title": title, "status": {}, "metrics": {}, "extra": {}}
    for rt, res in results.items():
        entry["status"][rt] = "ok" if res.error is None else f"failed: {res.error}"
        if res.extra:
            entry["extra"][rt] = res.extra
    for mname, metric in metrics.items():
        per_rt: dict[str, Any] = {}
        for rt, res in results.items():
            values = res.samples.get(mname, [])
            if values:
                s = Summary.of(values)
                per_rt[rt] = {"n": s.n, "p50": s.p50, "p95": s.p95, "max": s.max, "mean": s.mean,
                              "samples": values}
        ratios: dict[str, Any] = {}
        for ours in (r for r in per_rt if is_crispy(r)):
            for theirs in (r for r in per_rt if not is_crispy(r)):
                ratios[f"{ours}/{theirs}"] = {
                    "p50": ratio(per_rt[ours]["p50"], per_rt[theirs]["p50"]),
                    "p95": ratio(per_rt[ours]["p95"], per_rt[theirs]["p95"]),
                }
        entry["metrics"][mname] = {"unit": metric.unit, "better": metric.better, "title": metric.title,
                                   "runtimes": per_rt, "ratios": ratios}
    return entry


def cni_share_measured(scenarios: dict[str, Any]) -> dict[str, float]:
    """p50 of the CNI ADD time over p50 of networked RunPodSandbox, for the
    runtimes that report plugin timings (crispy)."""
    try:
        metrics = scenarios["pod_net"]["metrics"]
        cni, run = metrics["cni_add_s"]["runtimes"], metrics["run_pod_net_s"]["runtimes"]
    except KeyError:
        return {}
    return {rt: cni[rt]["p50"] / run[rt]["p50"] for rt in cni if rt in run and run[rt]["p50"] > 0}


def cni_share(scenarios: dict[str, Any]) -> dict[str, float]:
    """Estimated share of networked RunPodSandbox spent in CNI, per runtime:
    (p50 with pod network - p50 with host network) / p50 with pod network."""
    try:
        net = scenarios["pod_net"]["metrics"]["run_pod_net_s"]["runtimes"]
        host = scenarios["pod_start"]["metrics"]["run_pod_s"]["runtimes"]
    except KeyError:
        return {}
    out = {}
    for rt in net:
        if rt in host and net[rt]["p50"] > 0:
            out[rt] = max(0.0, (net[rt]["p50"] - host[rt]["p50"]) / net[rt]["p50"])
    return out


# (scenario, metric, the containerd it is judged against, bound on crispy/containerd p50, what the issue asks)
GOALS = [
    ("pull_cold", "pull_cold_s", "containerd-runc", 1.0, "cold pull no slower than containerd"),
    ("pod_start", "run_pod_s", "containerd-crun", 0.5, "RunPodSandbox at most half of containerd's, both on crun"),
    ("pod_start", "run_pod_sharedpid_s", "containerd-crun", 0.5,
     "RunPodSandbox with shareProcessNamespace at most half of containerd's, both on crun"),
    ("container_start", "create_start_s", "containerd-crun", 0.5,
     "CreateContainer+StartContainer at most half of containerd's, both on crun"),
    ("memory", "memory_per_pod_kib", "containerd-crun", 1.0, "memory per pod below containerd's"),
    ("pod_net", "run_pod_net_s", "containerd-crun", 0.5, "networked RunPodSandbox at most half of containerd's"),
]


# (scenario, metric, crispy's own baseline metric in the same scenario, bound on their p50 ratio, what the
# issue asks): goals for features containerd 1.6 cannot run, judged against crispy without the feature.
SELF_GOALS = [
    ("userns_pod_start", "userns_pod_start_s", "plain_pod_start_s", 1.3,
     "pod start with a user namespace at most 1.3× a plain pod's"),
    ("image_volume_start", "image_volume_create_start_s", "plain_create_start_s", 1.1,
     "container start with an image volume at most 1.1× a plain one's"),
]


def self_goals(results: dict) -> list[str]:
    lines = []
    ours = next((r for r in results["runtimes"] if is_crispy(r)), None)
    for sname, metric, baseline, bound, text in SELF_GOALS:
        metrics = results["scenarios"].get(sname, {}).get("metrics", {})
        if ours is None or metric not in metrics or baseline not in metrics:
            continue
        feature = (metrics[metric].get("runtimes", {}).get(ours) or {}).get("p50")
        plain = (metrics[baseline].get("runtimes", {}).get(ours) or {}).get("p50")
        if not feature or not plain:
            lines.append(f"- {text}: not measured ({ours} has no result)")
            continue
        r = feature / plain
        lines.append(f"- {text}: {ours} {metric}/{baseline} = {r:.2f}× — {'met' if r <= bound else 'not met'}")
    return lines


def goals(results: dict) -> list[str]:
    """One line per goal the issues set: the ratio, and met / not met / not measured."""
    lines = []
    ours = next((r for r in results["runtimes"] if is_crispy(r)), None)
    for sname, metric, theirs, bound, text in GOALS:
        m = results["scenarios"].get(sname, {}).get("metrics", {}).get(metric)
        if ours is None or m is None:
            continue
        r = (m["ratios"].get(f"{ours}/{theirs}") or {}).get("p50")
        if r is None:
            lines.append(f"- {text}: not measured ({ours} or {theirs} has no result)")
        else:
            lines.append(f"- {text}: {ours}/{theirs} = {r:.2f}× — {'met' if r <= bound else 'not met'}")
    return lines


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")


# ---- markdown ---------------------------------------------------------------

def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.2f} s"
    if unit == "KiB":
        return f"{value / 1024:.1f} MiB"
    return f"{value:.2f} {unit}"


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def short_status(status: str) -> str:
    """A table cell for a failure: the gRPC code if there is one; the full
    message is listed under the table."""
    import re

    m = re.search(r"\b([A-Z][A-Z_]{3,}):", status)
    return f"failed ({m.group(1)})" if m else "failed"


def markdown(results: dict) -> str:
    runtimes = list(results["runtimes"])
    lines = [f"# crispy vs containerd — {results['date']}", "",
             f"Command: `{results['command']}`  ",
             f"Host: {results['host']['summary']}  ",
             "Runtimes: " + "; ".join(f"**{rt}** = {info.get('version') or '?'} ({info.get('oci_runtime')})"
                                      + (f" — {info['error']}" if info.get("error") else "")
                                      for rt, info in results["runtimes"].items()),
             ""]
    notes = [f"{rt}: {n}" for rt, info in results["runtimes"].items() for n in info.get("notes", [])]
    if notes:
        lines += ["Notes: " + "; ".join(notes), ""]
    if results.get("host_changes"):
        lines += ["Host changes made by the run: " + "; ".join(results["host_changes"]), ""]
    lines += ["Ratios are crispy ÷ containerd at p50; below 1 is better for latency and memory, "
              "above 1 is better for throughput (pods/s, MB/s).", ""]
    crispy_rts = [r for r in runtimes if is_crispy(r)]
    other_rts = [r for r in runtimes if not is_crispy(r)]
    ratio_cols = [f"{a}/{b}" for a in crispy_rts for b in other_rts]
    header = ["scenario", "metric"] + [f"{rt} p50 / p95 / max" for rt in runtimes] + ratio_cols
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for sname, scen in results["scenarios"].items():
        for mname, m in scen["metrics"].items():
            row = [sname, m["title"] or mname]
            for rt in runtimes:
                v = m["runtimes"].get(rt)
                if v:
                    row.append(" / ".join(_fmt(v[k], m["unit"]) for k in ("p50", "p95", "max")))
                else:
                    status = scen["status"].get(rt, "not run")
                    row.append(short_status(status) if status.startswith("failed") else
                               "n/a" if status == "ok" else status)
            for col in ratio_cols:
                row.append(_fmt_ratio((m["ratios"].get(col) or {}).get("p50")))
            lines.append("| " + " | ".join(row) + " |")
    measured = results.get("derived", {}).get("cni_share_measured", {})
    if measured:
        lines += ["", "Share of networked RunPodSandbox spent in CNI plugin calls (measured from the daemon's "
                  "log, p50 over p50): " + ", ".join(f"{rt} {v * 100:.0f}%" for rt, v in measured.items())]
    share = results.get("derived", {}).get("cni_share", {})
    if share:
        lines += ["", "Share of networked RunPodSandbox spent in CNI (estimate: p50 with pod network minus "
                  "p50 with host network, over p50 with pod network): "
                  + ", ".join(f"{rt} {v * 100:.0f}%" for rt, v in share.items())]
    goal_lines = goals(results) + self_goals(results)
    if goal_lines:
        oci = results["runtimes"].get(next((r for r in runtimes if is_crispy(r)), ""), {}).get("oci_runtime", "?")
        lines += ["", f"Goals set by the issues (crispy's OCI runtime in this run: {oci}):"] + goal_lines
    per_pod = results["scenarios"].get("memory", {}).get("extra", {})
    if per_pod:
        lines += ["", "Processes per pod (PSS, averaged over the running pods; `sleep` is the workload itself):"]
        for rt, extra in per_pod.items():
            n = extra.get("pods") or 1
            parts = [f"{comm} ×{v['count'] / n:g} {v['kib'] / n:.0f} KiB"
                     for comm, v in sorted(extra.get("processes_by_name_pss_kib", {}).items())]
            lines.append(f"- {rt} ({n} pods): " + (", ".join(parts) or "none found"))
    failed = [(s, rt, st) for s, scen in results["scenarios"].items() for rt, st in scen["status"].items()
              if st != "ok"]
    if failed:
        lines += ["", "## Failed", ""] + [f"- {s} on {rt}: {st[len('failed: '):]}" for s, rt, st in failed]
    return "\n".join(lines) + "\n"


# ---- chart -------------------------------------------------------------------

def chart(results: dict, path: Path) -> bool:
    """Box plots of every latency metric, one panel per metric, runtimes side
    by side. Returns False (and writes nothing) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runtimes = list(results["runtimes"])
    panels = [(s, mname, m) for s, scen in results["scenarios"].items()
              for mname, m in scen["metrics"].items() if m["unit"] == "s"]
    if not panels:
        return False
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = ["#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e"]
    for ax, (sname, mname, m) in zip(axes.flat, panels, strict=False):  # the grid may have spare axes
        data, labels, cols_used = [], [], []
        for i, rt in enumerate(runtimes):
            v = m["runtimes"].get(rt)
            labels.append(rt.replace("containerd-", "ctrd-"))
            data.append([x * 1000 for x in v["samples"]] if v else [])
            cols_used.append(colors[i % len(colors)])
        positions = list(range(1, len(runtimes) + 1))
        present = [(p, d, c) for p, d, c in zip(positions, data, cols_used, strict=True) if d]
        if present:
            bp = ax.boxplot([d for _, d, _ in present], positions=[p for p, _, _ in present],
                            widths=0.6, patch_artist=True, showfliers=True)
            for patch, (_, _, c) in zip(bp["boxes"], present, strict=True):
                patch.set_facecolor(c)
                patch.set_alpha(0.6)
        status = results["scenarios"][sname]["status"]
        for p, d, rt in zip(positions, data, runtimes, strict=True):
            if not d:
                label = "n/a" if status.get(rt) == "ok" else "failed /\nnot run"
                ax.text(p, 0.5, label, ha="center", va="center", fontsize=7,
                        transform=ax.get_xaxis_transform(), color="#888")
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlim(0.4, len(runtimes) + 0.6)
        ax.set_ylim(bottom=0)  # a zero baseline keeps the runtimes' gap honest
        ax.set_title(m["title"] or mname, fontsize=9)
        ax.set_ylabel("ms", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"CRI latency, crispy vs containerd ({results['date']})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
