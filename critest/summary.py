"""Ginkgo JUnit report -> counts, one line per failure, markdown.

Ginkgo writes one <testcase> per spec and per suite-level node
([BeforeSuite], [ReportAfterSuite]); `status` is passed, skipped, pending,
failed, panicked, interrupted, timedout or aborted. A spec skipped by the
focus/skip filters says just "skipped"; one that skipped itself at run time
says why after "skipped - ".
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FAILED_STATES = {"failed", "panicked", "interrupted", "timedout", "aborted"}


@dataclass
class Case:
    name: str
    status: str
    seconds: float
    message: str = ""      # failure/skip message
    step: str = ""         # the last STEP the spec reached before failing
    location: str = ""     # "In [It] at: file:line"

    @property
    def is_spec(self) -> bool:
        return self.name.startswith("[It]")

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATES


@dataclass
class Failure:
    spec: str
    headline: str
    step: str
    location: str
    status: str
    environmental: str = ""  # why it is outside crispy's control, if it is


@dataclass
class Summary:
    passed: int = 0
    failed: int = 0
    skipped: int = 0           # filtered out plus skipped at run time
    pending: int = 0
    runtime_skips: list[tuple[str, str]] = field(default_factory=list)  # (spec, reason)
    failures: list[Failure] = field(default_factory=list)
    suite_nodes: list[Case] = field(default_factory=list)               # [BeforeSuite] & co.
    header: dict[str, int] = field(default_factory=dict)                # counts the report itself declares
    mismatches: list[str] = field(default_factory=list)

    @property
    def environmental(self) -> list[Failure]:
        return [f for f in self.failures if f.environmental]

    @property
    def real_failures(self) -> list[Failure]:
        return [f for f in self.failures if not f.environmental]

    def spec_counts(self) -> tuple[int, int, int, int]:
        """passed, failed, skipped, pending over the specs alone (as ginkgo's
        own closing line counts them), without the suite-level nodes."""
        def minus(status: set[str]) -> int:
            return sum(c.status in status for c in self.suite_nodes)
        return (self.passed - minus({"passed"}), self.failed - minus(FAILED_STATES),
                self.skipped - minus({"skipped"}), self.pending - minus({"pending"}))

    def categories(self) -> list[tuple[str, int]]:
        return Counter(category(f.headline) for f in self.real_failures).most_common()


_TYPE_PREFIX = re.compile(r"^<[^<>]*>:?\s*")


def headline(message: str) -> str:
    """The first informative line of a Gomega failure message, with the
    'Unexpected error:' banner, its closing 'occurred' and Go type
    annotations dropped and the struct dump that follows an error cut off."""
    parts: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line in ("Unexpected error:", "occurred"):
            continue
        line = _TYPE_PREFIX.sub("", line)
        if line.startswith("{"):
            break
        if not line:
            continue
        parts.append(line)
        # A gRPC error line is the whole story; Gomega repeats it in the dump.
        if "code = " in line or len(parts) == 6 or sum(map(len, parts)) > 200:
            break
    text = " ".join(parts)
    return text if len(text) <= 300 else text[:297] + "..."


_VOLATILE = [
    (re.compile(r"\b[0-9a-f]{12,64}\b"), "<id>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"/tmp/[^\s\"']+"), "<tmp>"),
    (re.compile(r"\b\d+(\.\d+)?(ms|s|m)?\b"), "<n>"),
]
_GRPC = re.compile(r"code = (\w+) desc = (.*)")


def category(line: str) -> str:
    """Groups failures that share a cause: the gRPC code and description
    when there is one, with ids, temp paths and numbers blanked."""
    m = _GRPC.search(line)
    text = f"{m.group(1)}: {m.group(2)}" if m else line
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text[:160]


def _last_step(system_err: str) -> str:
    steps = [ln.split("STEP:", 1)[1].strip() for ln in system_err.splitlines() if "STEP:" in ln]
    if not steps:
        return ""
    # "STEP: test status - /src/x.go:48 @ 11/28/26 13:04:16.865" -> "test status"
    step = re.sub(r"\s*@ \d\d/\d\d/\d\d [\d:.]+$", "", steps[-1])
    return re.sub(r"\s+-\s+\S+\.go:\d+$", "", step)


def parse(path: Path) -> tuple[list[Case], dict[str, int]]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    cases: list[Case] = []
    header = Counter()
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped", "disabled"):
            header[key] += int(suite.get(key, "0"))
        for tc in suite.findall("testcase"):
            status = tc.get("status", "")
            message = ""
            for tag in ("failure", "error", "skipped"):
                el = tc.find(tag)
                if el is not None:
                    message = el.get("message", "") or (el.text or "")
                    if not status:
                        status = {"failure": "failed", "error": "panicked", "skipped": "skipped"}[tag]
                    break
            status = status or "passed"
            err = tc.findtext("system-err") or ""
            location = ""
            for el in (tc.find("failure"), tc.find("error")):
                if el is not None and el.text:
                    loc = re.search(r"In \[[^\]]+\] at: (\S+)", el.text)
                    location = loc.group(0) if loc else ""
            cases.append(Case(tc.get("name", ""), status, float(tc.get("time", "0") or 0), message,
                              _last_step(err) if status in FAILED_STATES else "", location))
    return cases, dict(header)


def summarise(path: Path, environmental: dict[str, str] | None = None) -> Summary:
    """`environmental` maps image references that cannot be reproduced
    offline to the reason; a failure whose message or last step names one is
    listed as environmental."""
    environmental = environmental or {}
    cases, header = parse(path)
    s = Summary(header=header)
    for case in cases:
        if not case.is_spec:
            s.suite_nodes.append(case)
        if case.status == "passed":
            s.passed += 1
        elif case.status == "skipped":
            s.skipped += 1
            reason = case.message.removeprefix("skipped").removeprefix(" - ").strip()
            if reason:
                s.runtime_skips.append((case.name, headline(reason)))
        elif case.status == "pending":
            s.pending += 1
        elif case.failed:
            s.failed += 1
            why = next((r for ref, r in environmental.items()
                        if ref in case.message or ref in case.step), "")
            s.failures.append(Failure(case.name, headline(case.message) or case.status, case.step,
                                      case.location, case.status, why))
    # The report declares its own totals; ours must agree with them.
    total = s.passed + s.failed + s.skipped + s.pending
    if header.get("tests", total) != total:
        s.mismatches.append(f"testcases counted {total}, report declares tests={header['tests']}")
    if header.get("failures", 0) + header.get("errors", 0) != s.failed:
        s.mismatches.append(f"failed counted {s.failed}, report declares failures+errors="
                            f"{header.get('failures', 0) + header.get('errors', 0)}")
    if header.get("skipped", 0) != s.skipped:
        s.mismatches.append(f"skipped counted {s.skipped}, report declares skipped={header.get('skipped', 0)}")
    if header.get("disabled", 0) != s.pending:
        s.mismatches.append(f"pending counted {s.pending}, report declares disabled={header.get('disabled', 0)}")
    return s


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(s: Summary, context: list[str] | None = None) -> str:
    out = ["# critest summary", ""]
    out += [f"- {line}" for line in (context or [])]
    nodes = ", ".join(sorted({c.name for c in s.suite_nodes})) or "no suite-level nodes"
    specs = s.spec_counts()
    out += ["", "| | passed | failed | skipped | pending | total |", "|---|---:|---:|---:|---:|---:|",
            "| specs | " + " | ".join(map(str, specs)) + f" | {sum(specs)} |",
            f"| JUnit test cases (specs + {nodes}) | {s.passed} | {s.failed} | {s.skipped} | {s.pending} "
            f"| {s.passed + s.failed + s.skipped + s.pending} |",
            "",
            f"Failed = {len(s.real_failures)} failure(s) to fix + {len(s.environmental)} known environmental."]
    if s.mismatches:
        out += ["", "**The summary disagrees with the report's own totals:** " + "; ".join(s.mismatches)]
    if s.environmental:
        out += ["", f"## Known environmental failures ({len(s.environmental)})", "",
                "| spec | why |", "|---|---|"]
        out += [f"| {_cell(f.spec)} | {_cell(f.environmental)} |" for f in s.environmental]
    if s.real_failures:
        out += ["", f"## Failure categories ({len(s.real_failures)} failures)", "", "| specs | cause |", "|---:|---|"]
        out += [f"| {n} | {_cell(c)} |" for c, n in s.categories()]
        out += ["", "## Failures", "", "| spec | last step | first error line |", "|---|---|---|"]
        out += [f"| {_cell(f.spec)}{' (' + f.status + ')' if f.status != 'failed' else ''} | {_cell(f.step)} "
                f"| {_cell(f.headline)} |" for f in s.real_failures]
    if s.runtime_skips:
        out += ["", f"## Skipped by the specs themselves ({len(s.runtime_skips)})", "", "| spec | reason |",
                "|---|---|"]
        out += [f"| {_cell(name)} | {_cell(reason)} |" for name, reason in s.runtime_skips]
    return "\n".join(out) + "\n"


def as_dict(s: Summary) -> dict:
    return {
        "passed": s.passed, "failed": s.failed, "skipped": s.skipped, "pending": s.pending,
        "specs": dict(zip(("passed", "failed", "skipped", "pending"), s.spec_counts(), strict=True)),
        "report_header": s.header, "mismatches": s.mismatches,
        "environmental": [{"spec": f.spec, "why": f.environmental} for f in s.environmental],
        "failures": [{"spec": f.spec, "status": f.status, "step": f.step, "error": f.headline,
                      "location": f.location} for f in s.real_failures],
        "categories": [{"cause": c, "specs": n} for c, n in s.categories()],
        "runtime_skips": [{"spec": n, "reason": r} for n, r in s.runtime_skips],
    }
