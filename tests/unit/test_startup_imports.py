"""What the daemon loads before its first pull. httpx (with http.client,
email and idna) is ~3.5 MiB of an idle daemon's memory: it loads with the
first pull, not at start-up (bench's memory_idle measures the result)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_starting_the_daemon_does_not_load_the_http_client() -> None:
    probe = ("import sys, cri.cli, cri.daemon\n"
             "print(sorted(m for m in ('http.client', 'idna', 'httpx._client') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_http_client_loads_when_first_used() -> None:
    probe = ("import sys, cri.daemon\n"
             "from images.registry import client\n"
             "client.httpx.Timeout(1.0)\n"
             "print('httpx._client' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_the_explain_report_loads_with_the_first_verbose_status_not_at_start_up() -> None:
    # The daemon starts through the command line, whose parser knows `explain`.
    probe = ("import sys, cri.cli, cri.daemon\n"
             "cri.cli._parser().parse_args(['serve'])\n"
             "print(sorted(m for m in ('runtime.explain.filesystem', 'runtime.explain.network', 'runtime.explain.paths', 'runtime.explain.render') if m in sys.modules))\n"
             "from cri import explain_on_demand\n"
             "e = explain_on_demand.explainer(None, None, None, 'cgroupfs')\n"
             "e._get()\n"
             "print('runtime.explain.filesystem' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]
