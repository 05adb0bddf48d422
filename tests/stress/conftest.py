"""The reliability tier: our plugins under concurrency, SIGKILL, tampering, fuzzing and a
hostile dataDir, exec'd as a runtime execs them inside throwaway node namespaces.

    scripts/test stress                       small sizes (CI)
    CNI_BRIDGE_STRESS_WIDTH=64 CNI_BRIDGE_STRESS_ROUNDS=5 CNI_BRIDGE_STRESS_KILLS=200 \\
    CNI_BRIDGE_STRESS_FUZZ=5000 scripts/test stress      one run with large sizes

Sizes (environment, defaults in brackets): WIDTH concurrent execs of a storm [16], ROUNDS
of a storm [2], KILLS SIGKILLs of ADD and of DEL each [12], FUZZ fuzzer cases [400],
SEED the seed of every random choice [fresh]. The seed and the figures of the run
(counts, durations, what was found) are printed at the end of the session; setting
CNI_BRIDGE_STRESS_SEED to that seed repeats the run.

Needs root. The rig is stress_rig.py; fuzz_cases.py makes the fuzzer's cases and runs them.
"""

import json
import os
from pathlib import Path

import pytest

from plugin_runner import built_bin_dir, plugin_bin_dir
from stress_rig import UPLINK, Namespaces, Node, seed, sh

SEED = seed()
FIGURES: list[str] = []


def pytest_report_header(config):
    return [f"stress seed: {SEED} (CNI_BRIDGE_STRESS_SEED={SEED} repeats this run)"]


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("stress figures")
        terminalreporter.write_line(f"seed {SEED} (CNI_BRIDGE_STRESS_SEED={SEED} repeats this run)")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def _require_root():
    if os.geteuid() != 0:
        pytest.skip("the stress tier needs root")


@pytest.fixture(scope="session")
def stress_seed() -> int:
    return SEED


@pytest.fixture(scope="session")
def figures() -> list[str]:
    """Lines for the session's summary: figure(f"storm: {n} ADDs ...")."""
    return FIGURES


@pytest.fixture(scope="session")
def bin_dir(tmp_path_factory) -> Path:
    return plugin_bin_dir(tmp_path_factory.mktemp("hx-plugins"))


@pytest.fixture(scope="session")
def frozen() -> bool:
    """Whether the executables are the build (else the source tree's wrappers)."""
    return built_bin_dir() is not None


@pytest.fixture
def namespaces():
    made = Namespaces()
    yield made
    made.delete_all()


@pytest.fixture
def node(namespaces, tmp_path, bin_dir):
    node = Node(namespaces, tmp_path, bin_dir)
    yield node
    node.close()
    # The plugins ran in the node only: nothing of theirs in the real host.
    root_links = {link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show").stdout)}
    assert node.bridge not in root_links and UPLINK not in root_links
