"""What a runtime binary is, from what it says about itself.

The file name proves nothing (a crun installed as /usr/local/bin/oci is
still crun, a wrapper script called runc is not runc), so crispy runs
`<binary> --version` once per binary and reads the first line: "crun
version 1.8.1" or "runc version 1.1.5+ds1". crun lists its build features
as "+SECCOMP +SYSTEMD ..."; runc names the spec and libseccomp versions.
Anything else is an unknown runtime that gets the plain runc-compatible
command line.

The answer is kept per path and file identity, so the daemon's start-up
choice and the runtime factory share one run, and an upgraded binary is
asked again.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass, field

from runtime.oci.interface import RuntimeKind

VERSION_TIMEOUT = 5.0

_FIRST_LINE = re.compile(r"^(crun|runc) version (\S+)")


@dataclass(frozen=True)
class Probe:
    kind: RuntimeKind
    version: str  # "unknown" when the binary did not say
    features: frozenset[str] = field(default_factory=frozenset)
    # The OCI runtime spec version the binary implements, if it said.
    spec: str = ""
    # The first line it printed (or why it printed nothing), for logs.
    banner: str = ""


def parse_version(output: str) -> Probe:
    """Sans-IO: `--version`'s output to what the binary is."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    if not lines:
        return Probe(RuntimeKind.OTHER, "unknown", banner="")
    m = _FIRST_LINE.match(lines[0])
    fields: dict[str, str] = {}
    features: set[str] = set()
    for ln in lines[1:]:
        toks = ln.split()
        if all(t[0] in "+-" for t in toks):  # crun's build options, "-X" for the ones left out
            features.update(t[1:] for t in toks if t[0] == "+" and len(t) > 1)
        elif ":" in ln:
            key, _, value = ln.partition(":")
            fields[key.strip().lower()] = value.strip()
    if "libseccomp" in fields:
        features.add("SECCOMP")
    if m is None:
        # Keep the old reading of a version for messages: what follows "version".
        version = lines[0].split("version", 1)[-1].strip() or lines[0]
        return Probe(RuntimeKind.OTHER, version, frozenset(features), fields.get("spec", ""), lines[0])
    return Probe(RuntimeKind(m.group(1)), m.group(2), frozenset(features), fields.get("spec", ""), lines[0])


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_cache: dict[str, tuple[tuple[int, int, int, int] | None, Probe]] = {}
_lock = threading.Lock()


def probe(path: str) -> Probe:
    """Blocking on the first call for a binary (one `--version` run)."""
    ident = _identity(path)
    with _lock:
        hit = _cache.get(path)
    if hit is not None and hit[0] == ident:
        return hit[1]
    try:
        out = subprocess.run([path, "--version"], check=False, capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                             stdin=subprocess.DEVNULL).stdout
        result = parse_version(out)
    except (OSError, subprocess.TimeoutExpired) as exc:
        result = Probe(RuntimeKind.OTHER, "unknown", banner=f"{path} --version failed: {exc}")
    with _lock:
        _cache[path] = (ident, result)
    return result
