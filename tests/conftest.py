import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist each worker, and every `nnc` it starts, computes on one thread: two workers
# with torch's default of a thread per core oversubscribe a 2-core machine, and OpenMP's spinning
# threads then make the small models here many times slower. (Set before torch is imported.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def run_nnc(*args, cwd=None, timeout=600, input=None):
    """Run the real CLI in a fresh process; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "nnc.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, input=input)


@pytest.fixture
def nnc_cli():
    return run_nnc
