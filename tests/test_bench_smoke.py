"""The benchmark scripts in their smoke mode: they still run against today's code and print their
ratio. Their numbers are not asserted (benchmarks are measured on a quiet machine, never timed in
tests); docs/benchmarks.md records the full runs."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script, ratio", [
    ("end_to_end.py", r"nnc / hand-written wall time: \d+\.\d+"),
    ("conv_cpu.py", r"nnc / best hand-written: \d+\.\d+"),
    ("data_stream.py", r"nnc / hand-written: \d+\.\d+"),
    ("quantize.py", r"int8 / fp32 throughput \(digits_cnn\): \d+\.\d+ by median call(?s:.*)"
                    r"int8 / fp32 throughput \(digits_mlp\): \d+\.\d+"),
])
def test_benchmark_smoke_run_prints_its_ratio(script, ratio, tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(ratio, r.stdout), r.stdout[-3000:]
