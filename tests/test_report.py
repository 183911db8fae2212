"""report.py: SVG plots, the self-contained page, and the page of a real ``run`` in headless Chromium (loads with
no console messages, the three videos decode, the plots are there; a screenshot is left in the test's tmp dir).
Chromium tests skip when no chromium binary is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from triton_autogaze.report import bar_chart_svg, build_report, line_plot_svg, write_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def test_line_plot_gaps_marks_and_percent():
    svg = line_plot_svg("Mask ratio", {"frame": [0.1, 0.5, None, 0.3, float("inf"), 0.2], "EMA": [0.1] * 6},
                        percent=True, y_range=(0, 1), marks=[0, 3])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2  # frame: [0, 1] is a line, [3] and [5] dots; EMA: one line
    assert svg.count("<circle") == 2 and svg.count('class="mark"') == 2
    assert "100%" in svg and "Mask ratio" in svg
    assert "<svg" in line_plot_svg("empty", {"frame": []})


def test_bar_chart():
    svg = bar_chart_svg("Fixations", ["2x2", "14x14"], [3, 120], ["#000000", "#ffffff"])
    assert svg.count("<rect") == 2 and "120" in svg and "14x14" in svg


def _doc(n=5, vis="interframe") -> dict:
    frames = [{"frame": i, "keyframe": i % 2 == 0, "mask_ratio": 0.2, "update_ratio": 1.0 if i % 2 == 0 else 0.2,
               "psnr_db": None if i % 2 == 0 else 30.0, "num_fixations": 3, "fixations": {"2x2": 1, "14x14": 2},
               "ema": {"mask_ratio": 0.2, "update_ratio": 0.5, "psnr_db": 30.0}} for i in range(n)]
    return {"model": "demo", "video": "clip<&>.mp4", "num_frames": n, "height": 8, "width": 8, "fps": 25.0,
            "settings": {"mode": "resize-224", "visualization": vis, "palette": [[1, 2, 3], [4, 5, 6]]},
            "frames": frames, "histogram": {"scales": ["2x2", "14x14"], "fixations": [5, 10]},
            "summary": {"mean": {"mask_ratio": 0.2, "update_ratio": 0.5, "psnr_db": 30.0}},
            "timing": {"model_s": 1.0, "ms_per_frame": {"model": 200.0}}}


def test_page_embeds_videos_and_escapes(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"\x00\x01fake")
    (tmp_path / "b.mp4").write_bytes(b"\x02fake")
    page = build_report(_doc(), tmp_path, {"side by side": "a.mp4", "mask": "b.mp4", "gone": "missing.mp4"})
    assert page.count("<video") == 2 and page.count("data:video/mp4;base64,") == 2
    assert page.count("<svg") == 4 and "clip&lt;&amp;&gt;.mp4" in page and "clip<&>" not in page
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing from the network
    linked = build_report(_doc(), tmp_path, {"side by side": "a.mp4"}, embed_limit=1)
    assert 'src="a.mp4"' in linked and "base64" not in linked
    assert write_report(tmp_path / "r.html", _doc(), {"x": "a.mp4"}).read_text() == \
        build_report(_doc(), tmp_path, {"x": "a.mp4"})


def _chromium(args: list[str], page: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args,
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=90)


@needs_chromium
def test_report_of_a_run_in_headless_chromium(tmp_path):
    pytest.importorskip("av")
    from triton_autogaze.cli import main

    out = tmp_path / "run"
    assert main(["run", "--demo", "-o", str(out), "--max-frames", "4", "--gazing-ratio", "0.04", "--no-progress",
                 "--visualization", "interframe", "--keyframe-duration", "2"]) == 0
    page = out / "report.html"
    shot = tmp_path / "report.png"
    res = _chromium(["--screenshot=" + str(shot), "--window-size=1400,1000"], page, tmp_path / "profile1")
    assert shot.is_file() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    res = _chromium(["--virtual-time-budget=5000", "--dump-dom"], page, tmp_path / "profile2")
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console
    dom = res.stdout
    decoded = re.findall(r'<video[^>]*data-decoded="(\d+x\d+)"', dom)
    assert decoded == ["672x224", "224x224", "224x224"], decoded  # all three videos decode in the browser
    assert dom.count("<svg") == 4 and "Mask ratio" in dom and "Update ratio" in dom and "PSNR" in dom
    assert 'class="mark"' in dom  # interframe keyframes marked on the plots
