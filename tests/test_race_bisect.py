"""bench/race_bisect.py finds the op whose result differs between repeated engine calls (CPU, torch ops)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BISECT = Path(__file__).resolve().parents[1] / "bench" / "race_bisect.py"


def _run(monkeypatch, capsys, *args):
    spec = importlib.util.spec_from_file_location("race_bisect", BISECT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, "argv", ["race_bisect.py", "1", "1", "--runs", "2", "--backend", "torch", *args])
    mod.main()
    return capsys.readouterr().out


def test_finds_a_perturbed_op_and_its_element(monkeypatch, capsys):
    out = _run(monkeypatch, capsys, "--inject", "6")
    assert "run 1: first differs at op 6" in out
    # frame_setup, then layer 0 of the prefill (qkv, attention, residual_norm, gate_up, down), then layer 1
    assert "first differing op #6: rmsnorm_qkv_rope" in out
    assert "1 elements differ (inputs before the op equal)" in out


def test_equal_runs_report_no_difference(monkeypatch, capsys):
    out = _run(monkeypatch, capsys)
    assert "run 1: same checksums" in out and "no run differed" in out
