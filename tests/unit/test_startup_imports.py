"""What the daemon loads before it is asked for more: each probe starts a
fresh interpreter, imports what starting the daemon imports and lists
which of the modules in question are loaded. httpx (with http.client,
email and idna) is ~3.5 MiB of an idle daemon's memory: it loads with the
first pull, not at start-up (bench's memory_idle measures the result);
the explain report loads with the first verbose status; the Prometheus
exporter only when `[metrics] address` is set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def probe(code: str) -> str:
    """What `code`, run in a fresh interpreter from the project root, prints."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def loaded(*modules: str) -> str:
    """A probe line printing which of `modules` are loaded now."""
    return f"print(sorted(m for m in {modules!r} if m in sys.modules))\n"


def test_starting_the_daemon_does_not_load_the_http_client() -> None:
    out = probe("import sys, cri.cli, cri.daemon\n" + loaded("http.client", "idna", "httpx._client"))
    assert out.strip() == "[]"


def test_the_http_client_loads_when_first_used() -> None:
    out = probe("import sys, cri.daemon\n"
                "from images.registry import client\n"
                "client.httpx.Timeout(1.0)\n"
                "print('httpx._client' in sys.modules)\n")
    assert out.strip() == "True"


def test_the_explain_report_loads_with_the_first_verbose_status_not_at_start_up() -> None:
    # The daemon starts through the command line, whose parser knows `explain`.
    out = probe("import sys, cri.cli, cri.daemon\n"
                "cri.cli._parser().parse_args(['serve'])\n"
                + loaded('runtime.explain.filesystem', 'runtime.explain.network', 'runtime.explain.paths',
                         'runtime.explain.render') +
                "from cri import explain_on_demand\n"
                "e = explain_on_demand.explainer(None, None, None, 'cgroupfs')\n"
                "e._get()\n"
                "print('runtime.explain.filesystem' in sys.modules)\n")
    assert out.split() == ["[]", "True"]


def test_metrics_off_loads_no_exporter() -> None:
    out = probe("import sys, cri.cli, cri.daemon\n" + loaded("prometheus_client.registry", "wsgiref.simple_server"))
    assert out.strip() == "[]"
