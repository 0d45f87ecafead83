"""critest/summary.py: the JUnit report ginkgo writes -> counts and failure lines."""

from __future__ import annotations

from pathlib import Path

from critest import summary

DIGEST_REF = "gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:" + "97" * 32

# Shaped like ginkgo v2's junit reporter output (attributes, escapes, timeline).
REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="9" disabled="3" errors="1" failures="3" time="12.5">
  <testsuite name="CRI validation" package="/tmp" tests="9" disabled="1" skipped="2" errors="1" failures="3" time="12.5">
    <properties><property name="SuiteSucceeded" value="false"></property></properties>
    <testcase name="[BeforeSuite]" classname="CRI validation" status="passed" time="0.001"></testcase>
    <testcase name="[It] [k8s.io] Runtime info runtime should return version info [Conformance]" classname="CRI validation" status="passed" time="0.01"></testcase>
    <testcase name="[It] [k8s.io] PodSandbox runtime should support running PodSandbox [Conformance]" classname="CRI validation" status="failed" time="0.02">
      <failure message="failed to create PodSandbox&#xA;Unexpected error:&#xA;    &lt;*status.Error | 0xc000123&gt;: &#xA;    rpc error: code = Unimplemented desc = RunPodSandbox is not implemented yet (pod 0123456789abcdef0123)&#xA;    {&#xA;        s: {}&#xA;    }&#xA;occurred" type="failed">[FAILED] failed to create PodSandbox&#xA;In [It] at: /src/pkg/framework/util.go:230 @ 11/28/26 13:04:16.869&#xA;</failure>
      <system-err>&gt; Enter [It] PodSandbox&#xA;STEP: create a PodSandbox with log directory - /src/pkg/validate/pod.go:48 @ 11/28/26 13:04:16.868&#xA;[FAILED] failed&#xA;</system-err>
    </testcase>
    <testcase name="[It] [k8s.io] PodSandbox runtime should support removing PodSandbox [Conformance]" classname="CRI validation" status="failed" time="0.02">
      <failure message="failed to create PodSandbox&#xA;Unexpected error:&#xA;    &lt;*status.Error | 0xc000999&gt;: &#xA;    rpc error: code = Unimplemented desc = RunPodSandbox is not implemented yet (pod fedcba9876543210fedc)&#xA;occurred" type="failed">[FAILED] x&#xA;In [BeforeEach] at: /src/pkg/framework/util.go:230 @ 11/28/26 13:04:17.001&#xA;</failure>
    </testcase>
    <testcase name="[It] [k8s.io] Image Manager public image with digest should be pulled and removed [Conformance] [Serial]" classname="CRI validation" status="failed" time="1.5">
      <failure message="failed to pull image&#xA;Unexpected error:&#xA;    rpc error: code = NotFound desc = manifest unknown" type="failed">[FAILED] x</failure>
      <system-err>STEP: Remove image : DIGEST_REF @ 11/28/26 13:06:05.328&#xA;STEP: Pull image : DIGEST_REF @ 11/28/26 13:06:05.329&#xA;</system-err>
    </testcase>
    <testcase name="[It] [k8s.io] Container runtime should support exec [Conformance]" classname="CRI validation" status="panicked" time="0.3">
      <error message="runtime error: invalid memory address or nil pointer dereference" type="panicked">[PANICKED] x</error>
    </testcase>
    <testcase name="[It] [k8s.io] Security Context AppArmor should enforce a profile blocking writes" classname="CRI validation" status="skipped" time="0.001">
      <skipped message="skipped - AppArmor is not enabled on this host"></skipped>
    </testcase>
    <testcase name="[It] [k8s.io] PodSandbox benchmark about lifecycle of PodSandbox" classname="CRI validation" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [k8s.io] Pending spec" classname="CRI validation" status="pending" time="0">
      <skipped message="pending"></skipped>
    </testcase>
  </testsuite>
</testsuites>
""".replace("DIGEST_REF", DIGEST_REF)


def write(tmp_path: Path, text: str = REPORT) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(text)
    return path


def test_counts_match_the_report(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path), {DIGEST_REF: "cannot be reproduced offline"})
    assert (s.passed, s.failed, s.skipped, s.pending) == (2, 4, 2, 1)
    assert s.mismatches == []
    assert [c.name for c in s.suite_nodes] == ["[BeforeSuite]"]


def test_failure_headline_skips_banner_and_type_dump(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path))
    first = s.failures[0]
    assert first.headline == ("failed to create PodSandbox rpc error: code = Unimplemented "
                              "desc = RunPodSandbox is not implemented yet (pod 0123456789abcdef0123)")
    assert first.step == "create a PodSandbox with log directory"
    assert first.location.startswith("In [It] at: /src/pkg/framework/util.go:230")
    assert s.failures[1].location.startswith("In [BeforeEach]")


def test_panics_count_as_failures(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path))
    panicked = [f for f in s.failures if f.status == "panicked"]
    assert len(panicked) == 1
    assert "nil pointer dereference" in panicked[0].headline


def test_same_cause_groups_into_one_category(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path))
    cats = dict(s.categories())
    assert cats["Unimplemented: RunPodSandbox is not implemented yet (pod <id>)"] == 2


def test_environmental_only_for_unreproducible_refs(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path), {DIGEST_REF: "pinned upstream digest"})
    assert [f.spec for f in s.environmental] == [
        "[It] [k8s.io] Image Manager public image with digest should be pulled and removed [Conformance] [Serial]"]
    assert s.environmental[0].environmental == "pinned upstream digest"
    assert len(s.real_failures) == 3
    # Without the list, the same failure is a real one.
    assert len(summary.summarise(write(tmp_path)).real_failures) == 4


def test_runtime_skips_keep_their_reason_filtered_ones_do_not(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path))
    assert s.runtime_skips == [("[It] [k8s.io] Security Context AppArmor should enforce a profile blocking writes",
                                "AppArmor is not enabled on this host")]


def test_disagreement_with_the_report_header_is_reported(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path, REPORT.replace('skipped="2" errors="1" failures="3"',
                                                         'skipped="2" errors="0" failures="3"')))
    assert any("failures+errors=3" in m for m in s.mismatches)
    s = summary.summarise(write(tmp_path, REPORT.replace('tests="9" disabled="1"', 'tests="10" disabled="1"')))
    assert any("tests=10" in m for m in s.mismatches)


def test_markdown_lists_counts_categories_and_every_failure(tmp_path: Path) -> None:
    s = summary.summarise(write(tmp_path), {DIGEST_REF: "pinned upstream digest"})
    md = summary.markdown(s, ["critest v1.36.0"])
    assert "| specs | 1 | 4 | 2 | 1 | 8 |" in md
    assert "| JUnit test cases (specs + [BeforeSuite]) | 2 | 4 | 2 | 1 | 9 |" in md
    assert "## Known environmental failures (1)" in md
    assert "| 2 | Unimplemented: RunPodSandbox is not implemented yet (pod <id>) |" in md
    for f in s.real_failures:
        assert summary._cell(f.spec) in md
    assert "AppArmor is not enabled on this host" in md
    d = summary.as_dict(s)
    assert (d["passed"], d["failed"], d["skipped"]) == (2, 4, 2)
    assert d["specs"] == {"passed": 1, "failed": 4, "skipped": 2, "pending": 1}
    assert len(d["failures"]) == 3 and len(d["environmental"]) == 1


def test_headline_of_a_gomega_comparison() -> None:
    msg = "should return all the required runtime conditions\nExpected\n    <int>: 1\nto be >=\n    <int>: 2"
    assert summary.headline(msg) == "should return all the required runtime conditions Expected 1 to be >= 2"


def test_headline_stops_at_the_grpc_error() -> None:
    msg = ("failed to list container stats for containers status: rpc error: code = Unimplemented desc = X\n"
           "Unexpected error:\n    <*status.Error | 0xc0>: \n    rpc error: code = Unimplemented desc = X\n")
    assert summary.headline(msg) == ("failed to list container stats for containers status: "
                                     "rpc error: code = Unimplemented desc = X")
