"""scripts/bench, the figures the README quotes, runs and reports every row (one round, a
few attachments: this checks that it works, not how fast anything is)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_bench_reports_every_figure_and_a_profile():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not (ROOT / "build" / "bin" / "bridge").exists() or not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs build/bin (scripts/build) and the reference plugins")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), "--rounds", "1", "--attachments", "3",
                           "--profile"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for figure in ("bridge ADD, isGateway + ipMasq", "bridge DEL, ipMasq", "bridge ADD, no ipMasq", "host-local ADD",
                   "20 bridge ADDs at once, wall", "peak RSS of one bridge ADD", "DEL with 3 attachments / with none",
                   "portmap ADD (reference: iptables)", "portmap DEL (reference: nftables)",
                   "exit: the kernel closes our sockets"):
        assert figure in proc.stdout, proc.stdout
    # It cleaned up after itself: no namespace of its own is left.
    assert "bench-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
