"""The run report: metrics.json's document + the run's videos -> one self-contained HTML page (videos embedded as
data URIs, plots as inline SVG, a few lines of inline script, nothing fetched from the network).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Sequence

EMBED_LIMIT = 48 * 1024 * 1024  # bytes of video embedded in total; past it the page links the files in its folder
SERIES_COLOURS = ("#1f6fb4", "#d1495b")  # per-frame value, EMA


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About n round tick values spanning [lo, hi]."""
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_plot_svg(title: str, series: dict[str, Sequence[float | None]], percent: bool = False,
                  y_range: tuple[float, float] | None = None, marks: Sequence[int] = (), width: int = 620,
                  height: int = 220) -> str:
    """An inline SVG line chart of per-frame series (x = frame number). None / non-finite values leave gaps;
    ``marks``: frames drawn as faint vertical lines (keyframes); percent: values are ratios shown as %."""
    left, right, top, bottom = 52, 12, 28, 30
    pw, ph = width - left - right, height - top - bottom
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    n = max((len(s) for s in series.values()), default=0)
    if y_range is None:
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 0.5)
        y_range = (lo - pad, hi + pad)
    lo, hi = y_range
    scale = 100.0 if percent else 1.0

    def px(i: int) -> float:
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def py(v: float) -> float:
        return top + ph * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))

    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
           f'<text x="{left}" y="17" class="title">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>']
    for v in _ticks(lo * scale, hi * scale):
        y = py(v / scale)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" class="ytick">{_fmt(v)}{"%" if percent else ""}</text>')
    for i in marks:
        if 0 <= i < n:
            out.append(f'<line x1="{px(i):.1f}" x2="{px(i):.1f}" y1="{top}" y2="{top + ph}" class="mark"/>')
    if n:
        for v in _ticks(0, max(n - 1, 1)):
            if v == int(v) and v <= n - 1:
                out.append(f'<text x="{px(int(v)):.1f}" y="{top + ph + 18}" class="xtick">{int(v)}</text>')
    for k, (name, s) in enumerate(series.items()):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        runs, cur = [], []
        for i, v in enumerate(s):
            if v is None or not math.isfinite(v):
                runs, cur = runs + [cur] if cur else runs, []
            else:
                cur.append(f"{px(i):.1f},{py(v):.1f}")
        runs += [cur] if cur else []
        for r in runs:
            if len(r) == 1:
                x, y = r[0].split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>')
            else:
                out.append(f'<polyline points="{" ".join(r)}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        lx = left + pw - 150 + 78 * k
        out.append(f'<rect x="{lx}" y="9" width="12" height="4" fill="{colour}"/>'
                   f'<text x="{lx + 16}" y="15" class="legend">{html.escape(name)}</text>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 2}" class="xlabel">frame</text></svg>')
    return "".join(out)


def bar_chart_svg(title: str, labels: Sequence[str], values: Sequence[float], colours: Sequence[str],
                  width: int = 420, height: int = 220) -> str:
    """An inline SVG bar chart, one bar per label with its value written above it."""
    left, top, bottom = 20, 28, 30
    pw, ph = width - 2 * left, height - top - bottom
    vmax = max(max(values, default=0), 1e-9)
    bw = pw / max(len(values), 1)
    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
           f'<text x="{left}" y="17" class="title">{html.escape(title)}</text>']
    for i, (lab, v, c) in enumerate(zip(labels, values, colours)):
        h = ph * v / vmax
        x = left + i * bw + bw * 0.15
        out.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw * 0.7:.1f}" height="{h:.1f}" fill="{c}"/>'
                   f'<text x="{x + bw * 0.35:.1f}" y="{top + ph - h - 4:.1f}" class="bar">{_fmt(v)}</text>'
                   f'<text x="{x + bw * 0.35:.1f}" y="{top + ph + 18}" class="bar">{html.escape(lab)}</text>')
    out.append("</svg>")
    return "".join(out)


def _video(path: Path, embed: bool, label: str) -> str:
    src = (f"data:video/mp4;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}" if embed
           else html.escape(path.name))
    return (f'<figure><video controls autoplay muted loop playsinline preload="auto" src="{src}" '
            f'title="{html.escape(label)}"></video><figcaption>{html.escape(label)}</figcaption></figure>')


def _rows(d: dict) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in d.items())


def _hex(rgb: Sequence[int]) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}.sub{color:#666}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}figure{margin:0}
video{max-width:100%;background:#000;display:block}figcaption{color:#555;font-size:12px;margin-top:2px}
.wide{margin-bottom:12px}.half{max-width:49%}
table{border-collapse:collapse;font-size:13px}th,td{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{color:#555;font-weight:600}.plot{background:#fff;border:1px solid #ddd}
.plot .title{font-size:13px;font-weight:600}.plot .frame{fill:none;stroke:#bbb}.plot .grid{stroke:#eee}
.plot .mark{stroke:#e0b000;stroke-opacity:.5;stroke-dasharray:3 3}
.plot .ytick{font-size:11px;text-anchor:end;fill:#555}.plot .xtick,.plot .bar,.plot .xlabel{font-size:11px;
text-anchor:middle;fill:#555}.plot .legend{font-size:11px;fill:#333}
.swatch{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:-1px}"""


# The only script: marks each video with its decoded size once its first frame is ready (the headless-browser
# test reads it back) and keeps the smaller players in step with the first one.
SCRIPT = """const vs=[...document.querySelectorAll('video')];
vs.forEach(v=>v.addEventListener('loadeddata',()=>{v.dataset.decoded=v.videoWidth+'x'+v.videoHeight;}));
if(vs.length>1){vs[0].addEventListener('play',()=>vs.slice(1).forEach(v=>{v.currentTime=vs[0].currentTime;v.play();}));
vs[0].addEventListener('seeked',()=>vs.slice(1).forEach(v=>{v.currentTime=vs[0].currentTime;}));}"""


def build_report(doc: dict, folder: str | Path, videos: dict[str, str], embed_limit: int = EMBED_LIMIT) -> str:
    """The page for a run. doc: the metrics.json document (settings, frames, histogram, summary, timing);
    folder: where the videos are; videos: {caption: file name} in display order, the first shown full width."""
    folder = Path(folder)
    paths = {k: folder / v for k, v in videos.items() if (folder / v).is_file()}
    embed = sum(p.stat().st_size for p in paths.values()) <= embed_limit
    frames = doc.get("frames", [])
    get = lambda k: [f.get(k) for f in frames]  # noqa: E731
    ema = lambda k: [f.get("ema", {}).get(k) for f in frames]  # noqa: E731
    s = doc.get("settings", {})
    marks = [f["frame"] - frames[0]["frame"] for f in frames if f.get("keyframe")] \
        if s.get("visualization") == "interframe" else []
    hist = doc.get("histogram", {})
    palette = s.get("palette", [])
    n_scales = len(hist.get("scales", []))
    colours = [_hex(palette[min(i, len(palette) - 1)]) if palette else "#888" for i in range(n_scales)]
    summ = doc.get("summary", {})
    mean = summ.get("mean", {})
    title = f"AutoGaze run: {doc.get('video', '')}"
    vids = list(paths.items())
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><div class='sub'>{doc.get('num_frames', len(frames))} frames, "
             f"{doc.get('width')}x{doc.get('height')} @ {_fmt(doc.get('fps') or 0)} fps; model "
             f"{html.escape(str(doc.get('model')))}; mode {html.escape(str(s.get('mode')))}; visualization "
             f"{html.escape(str(s.get('visualization')))}. Mean mask ratio "
             f"{100 * (mean.get('mask_ratio') or 0):.1f}%, update ratio {100 * (mean.get('update_ratio') or 0):.1f}%"
             + (f", PSNR {mean['psnr_db']:.1f} dB" if mean.get("psnr_db") is not None else "") + ".</div>",
             "<h2>Videos</h2>"]
    if vids:
        parts.append(f"<div class='wide'>{_video(vids[0][1], embed, vids[0][0])}</div><div class='row'>")
        parts += [f"<div class='half'>{_video(p, embed, k)}</div>" for k, p in vids[1:]]
        parts.append("</div>")
    legend = "".join(f"<span class='swatch' style='background:{c}'></span>{html.escape(n)}"
                     for n, c in zip(hist.get("scales", []), colours))
    parts.append(f"<div class='sub'>Mask colours by scale (finer cells drawn on top):{legend}</div>")
    parts.append("<h2>Per frame</h2><div class='row'>")
    parts.append(line_plot_svg("Mask ratio", {"frame": get("mask_ratio"), "EMA": ema("mask_ratio")}, True,
                               (0.0, 1.0), marks))
    parts.append(line_plot_svg("Update ratio", {"frame": get("update_ratio"), "EMA": ema("update_ratio")}, True,
                               (0.0, 1.0), marks))
    parts.append(line_plot_svg("PSNR input vs output (dB; gaps: identical)",
                               {"frame": get("psnr_db"), "EMA": ema("psnr_db")}, marks=marks))
    parts.append(bar_chart_svg("Fixations per scale (whole run)", hist.get("scales", []),
                               hist.get("fixations", []), colours))
    parts.append("</div>")
    timing = doc.get("timing", {})
    parts.append("<h2>Settings and timing</h2><div class='row'><table>" + _rows(s) + "</table>")
    if timing:
        parts.append("<table>" + _rows({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in timing.items()
                                        if not isinstance(v, dict)}) + "</table>")
    parts.append(f"</div><script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


def write_report(path: str | Path, doc: dict, videos: dict[str, str], embed_limit: int = EMBED_LIMIT) -> Path:
    """Write :func:`build_report` to ``path`` (videos are looked up beside it); returns the path."""
    path = Path(path)
    path.write_text(build_report(doc, path.parent, videos, embed_limit), encoding="utf-8")
    return path
