"""The failover benchmark's HTML report: one self-contained page, inline SVG, no scripts."""
from __future__ import annotations

import html
import subprocess
from collections import Counter
from pathlib import Path

from builder.render import write_atomic

BUCKET = 0.1  # seconds per bar
PALETTE = ("#4c78a8", "#72b7b2", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#bab0ac")
FAILED = "#e45756"


def colours(windows) -> dict[str, str]:
    """One colour per answering server (any profile's names), in name order; failures red."""
    names = sorted({r.server or "other" for w in windows for r in w.records if r.ok})
    return {**{n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}, "failed": FAILED}


def timeline(w, palette: dict[str, str], width: int = 900, height: int = 120) -> str:
    """Requests per 100 ms bucket by answering server, failures on top; fault and recovery lines."""
    if not w.records:
        return "<p>no requests recorded</p>"
    t0 = min(r.t for r in w.records)
    t1 = max(r.t for r in w.records) + BUCKET
    n = max(1, int((t1 - t0) / BUCKET) + 1)
    buckets: list[Counter[str]] = [Counter() for _ in range(n)]
    for r in w.records:
        key = "failed" if not r.ok else (r.server or "other")
        buckets[int((r.t - t0) / BUCKET)][key] += 1
    peak = max(sum(b.values()) for b in buckets) or 1
    bw = width / n
    parts = []
    for i, b in enumerate(buckets):
        y = float(height)
        for key in palette:
            if b.get(key):
                h = b[key] / peak * (height - 10)
                y -= h
                parts.append(f'<rect x="{i * bw:.1f}" y="{y:.1f}" width="{max(bw, 1):.1f}" '
                             f'height="{h:.1f}" fill="{palette[key]}"/>')
    x_fault = (w.fault_at - t0) / (t1 - t0) * width
    parts.append(f'<line x1="{x_fault:.1f}" x2="{x_fault:.1f}" y1="0" y2="{height}" stroke="black" '
                 'stroke-dasharray="4 2"/><text x="{:.1f}" y="10" font-size="10">fault</text>'.format(x_fault + 2))
    if w.outage:
        x_rec = (w.fault_at + w.outage - t0) / (t1 - t0) * width
        # near the right edge the label goes left of its line, not off the plot
        x_text, anchor = (x_rec - 2, "end") if x_rec > width - 90 else (x_rec + 2, "start")
        parts.append(f'<line x1="{x_rec:.1f}" x2="{x_rec:.1f}" y1="0" y2="{height}" stroke="green"/>'
                     f'<text x="{x_text:.1f}" y="22" font-size="10" fill="green" text-anchor="{anchor}">'
                     'last failure sent</text>')
    axis = f'<text x="0" y="{height + 12}" font-size="10">0 s</text>' \
           f'<text x="{width - 40}" y="{height + 12}" font-size="10">{t1 - t0:.0f} s</text>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 16}" '
            f'role="img" aria-label="{html.escape(w.fault)} timeline">{"".join(parts)}{axis}</svg>')


def write(out: Path, windows, rows, startup: list[str], images: list[dict], setup: str,
          side: tuple[list[str], list[list[str]]] | None = None) -> Path:
    """The report page; `side`: bench.side_by_side's table, when several profiles ran."""
    def fmt(v, f="{:.1f}"):
        m, lo, hi = v
        return f"{f.format(m)} <small>[{f.format(lo)}&ndash;{f.format(hi)}]</small>"
    table = "".join(
        f"<tr><td>{html.escape(r['profile'])}</td><td>{html.escape(r['fault'])}</td><td>{r['runs']}</td>"
        f"<td>{fmt(r['outage'])}</td><td>{fmt(r['failed'], '{:.0f}')}</td><td>{fmt(r['complete'])}</td>"
        f"<td>{r['p50 before'][0]:.0f} / {r['p99 before'][0]:.0f}</td>"
        f"<td>{r['p50 after'][0]:.0f} / {r['p99 after'][0]:.0f}</td>"
        f"<td>{html.escape(' '.join(r['notes']))}</td></tr>" for r in rows)
    palette = colours(windows)
    legend = " ".join(f'<span style="color:{c}">&#9632; {k}</span>' for k, c in palette.items())
    sections = "".join(
        f"<h3>{html.escape(w.profile)}: {html.escape(w.fault)} #{w.rep} &mdash; outage {w.outage:.1f} s, "
        f"{w.failed} failed</h3>{timeline(w, palette)}" for w in windows)
    boots = "".join(f"<li>{html.escape(line)}</li>" for line in startup)
    side_html = ""
    if side:
        header, lines = side
        side_html = ("<h2>Side by side</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>"
                                         for line in lines) + "</table>")
    images_html = ""
    if images:
        mib = 1 << 20
        images_html = ("<h2>Images</h2><p>From the last <code>make bench-images</code>.</p><table><tr>"
                  "<th>image</th><th>cold build s</th><th>warm build s</th><th>raw MiB</th>"
                  "<th>zstd MiB</th><th>boot to ready s</th><th>two builds identical</th></tr>" + "".join(
                      f"<tr><td>{html.escape(r['role'])}</td><td>{r['cold']:.0f}</td><td>{r['warm']:.0f}</td>"
                      f"<td>{r['raw'] / mib:.0f}</td><td>{r['zstd'] / mib:.0f}</td><td>{r['ready']:.1f}</td>"
                      f"<td>{'yes' if r['identical'] else 'no'}</td></tr>"
                      for r in images) + "</table>")
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>LVS appliance failover benchmark</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(-n+2){{text-align:left}}
small{{color:#666}}</style></head><body>
<h1>Failover benchmark</h1><p>{html.escape(setup)}. Median [min&ndash;max] over the runs.
<em>Outage</em>: fault to the sending of the last failed request (every later one succeeded).
<em>Complete</em>: fault to the end of the last request not yet in the final state (e.g. still
answered by the stopped server; a request to a dead director ends at the client's timeout).</p>
<table><tr><th>profile</th><th>fault</th><th>runs</th><th>outage s</th><th>failed</th><th>complete s</th>
<th>p50/p99 ms before</th><th>after</th><th>notes (VIP holders, late failures)</th></tr>{table}</table>
{side_html}<h2>Start-up and images</h2><ul>{boots}</ul>{images_html}
<h2>Timelines</h2><p>Requests per 100 ms by answering server. {legend}</p>{sections}
</body></html>"""
    path = out / "report.html"
    write_atomic(path, page)
    return path


def screenshot(page: Path) -> Path:
    """Render the report in headless chromium, in a network namespace of its own (no network)."""
    shot = page.with_name("report.png")
    argv = ["unshare", "--net", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--user-data-dir=/tmp/lvs-appliance-chromium", "--window-size=1100,2400",
            f"--screenshot={shot}", page.as_uri()]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return shot
