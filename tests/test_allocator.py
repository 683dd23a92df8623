"""swarm.allocator: freed tensors' memory is reused, not faulted in again (the relevance pass's
temporaries; benchmarks/relevance_cost.py has the speed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

# Temporaries as a relevance pass makes them: several live at once, of a few sizes, freed, again.
CYCLES = """
import resource, sys
import numpy as np
if sys.argv[1] == "reuse":
    from swarm.allocator import reuse_freed_memory
    assert reuse_freed_memory()
def cycle():
    a, b = np.ones(3_000_000, np.float32), np.ones(3_000_000, np.float32)
    c, d = a * b, np.ones(6_000_000, np.float32)
    return float(c[0] + d[0])
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", CYCLES, mode], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    default, reuse = _page_faults("default"), _page_faults("reuse")
    assert default > 10_000, default  # 20 cycles of 72 MB: glibc returns and re-faults most of it
    assert reuse < default / 20, (reuse, default)
