import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _report_each_benchmark(request):
    """Print each benchmark's median as soon as it ends: a suite cut off by a time limit (a device call) still
    shows what finished (pytest-benchmark's own table and JSON come only at the end of the session)."""
    bench = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    yield
    if bench is None:
        return
    stats = getattr(getattr(bench, "stats", None), "stats", None)
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if stats is None or tr is None or not getattr(stats, "data", None):
        return
    extra = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in bench.extra_info.items()}
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        tr.ensure_newline()
        tr.write_line(f"[bench] {request.node.nodeid}: median {stats.median * 1e3:.3f} ms over "
                      f"{len(stats.data)} rounds {extra}")
