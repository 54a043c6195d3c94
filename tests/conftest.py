import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def run_nnc(*args, cwd=None, timeout=600, input=None):
    """Run the real CLI in a fresh process; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "nnc.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, input=input)


@pytest.fixture
def nnc_cli():
    return run_nnc
