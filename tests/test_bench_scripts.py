"""The device-side scripts in bench/ parse: a device call that fails on a quoting slip or a stale option costs
minutes of a 30-minute budget, so they are checked here, where it is free."""

from __future__ import annotations

import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHELL = sorted(REPO.glob("bench/*.sh")) + [REPO / ".ci" / "run"]
PYTHON = sorted(REPO.glob("bench/*.py"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", SHELL, ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", PYTHON, ids=lambda p: p.name)
def test_python_scripts_compile(script, tmp_path):
    py_compile.compile(str(script), cfile=str(tmp_path / "x.pyc"), doraise=True)


@pytest.mark.parametrize("script", ["engine_gpu.py", "concurrency_probe.py", "push_probe.py", "kernel_regs.py",
                                    "graph_launch_probe.py"])
def test_device_scripts_take_their_options(script):
    """The scripts the device calls run take --help on a CPU machine (imports and argument parsers intact)."""
    r = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout


def test_kv_bytes_counts_the_reads_of_a_full_budget_clip():
    """engine_gpu.kv_bytes: the least any engine reads (each prefill's keys once) is what one prefill block of every
    query reads, a split into query blocks reads more, and the figures of bench/RESULTS.md's floors follow."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from engine_gpu import kv_bytes
    finally:
        sys.path.remove(str(REPO / "bench"))
    from fixture_data import LOCAL
    from triton_autogaze.config import AutoGazeConfig

    cfg = AutoGazeConfig.from_file(LOCAL / "model" / "config.json")
    budgets = [198] * 16
    least = kv_bytes(cfg, budgets, 1, 4, prefill_block=None)
    assert least == kv_bytes(cfg, budgets, 1, 4, prefill_block=1024)  # one block holds a whole prefill
    assert least < kv_bytes(cfg, budgets, 1, 4, 64) < kv_bytes(cfg, budgets, 1, 4, 32)
    assert kv_bytes(cfg, budgets, 45, 2, None) == 45 * least / 2
    assert round(least / 1e9, 2) == 6.41 and round(kv_bytes(cfg, budgets, 1, 4, 32) / 1e9, 2) == 8.22
