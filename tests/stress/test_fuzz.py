"""The fuzzer over configs and environment (fuzz_cases.py makes and runs the cases): FUZZ
cases in a node namespace, in chunks of one worker process each, one in EXEC_EVERY through
the real executable. Every finding names its case, which make_case(seed, index) repeats."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stress_rig import size

pytestmark = pytest.mark.stress

FUZZ = size("FUZZ", 400)
CHUNK = 250  # cases per worker: a plugin leaks what it does not close, knowing it exits
EXEC_EVERY = 10
ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fuzz_cases.py")


@pytest.fixture
def sandbox(tmp_path) -> Path:
    root = tmp_path / "fuzz"
    root.mkdir()
    os.mkfifo(root / "fifo")
    (root / "plain").write_text("")
    (root / "resolv.conf").write_text("nameserver 10.183.64.1\nsearch hx.test\noptions ndots:2\n")
    return root


def test_fuzz_configs_and_environment(node, sandbox, bin_dir, stress_seed, figures):
    (container,) = node.containers(1, "f")
    reports = []
    for start in range(0, FUZZ, CHUNK):
        plan = {"seed": stress_seed, "start": start, "count": min(CHUNK, FUZZ - start), "exec_every": EXEC_EVERY,
                "root": str(sandbox), "netns": f"/var/run/netns/{container}", "bin_dir": str(bin_dir),
                "report": str(sandbox / f"report-{start}.json")}
        (sandbox / "plan.json").write_text(json.dumps(plan))
        worker = subprocess.run(["ip", "netns", "exec", node.name, sys.executable, str(WORKER), str(sandbox / "plan.json")],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=3600)
        assert worker.returncode == 0, worker.stderr[-3000:]
        reports.append(json.loads(Path(plan["report"]).read_text()))

    findings = [finding for report in reports for finding in report["findings"]]
    outcomes: dict[str, int] = {}
    for report in reports:
        for outcome, count in report["outcomes"].items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    cases, execs = sum(r["cases"] for r in reports), sum(r["execs"] for r in reports)
    seconds = sum(r["seconds"] for r in reports)
    top = ", ".join(f"{outcome}: {count}" for outcome, count in sorted(outcomes.items(), key=lambda i: -i[1])[:8])
    figures.append(f"fuzzer: {cases} cases ({execs} through the executable) in {seconds:.0f} s,"
                   f" {len(findings)} findings; most frequent outcomes: {top}")
    assert not findings, json.dumps(findings[:10], indent=1, ensure_ascii=False)
    assert cases == FUZZ
