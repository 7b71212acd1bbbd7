"""The failover benchmark's arithmetic and report, on synthetic request records."""
import json

from lab import bench as bench_failover
from lab import report
from lab.loadgen import Request


def records():
    # 10 s at 10 req/s; fault at t=3; requests between 3.0 and 5.0 fail; after that only webserver2
    out = []
    for i in range(100):
        t = 100 + i / 10
        if 103 <= t < 105:
            out.append(Request(t, 1.0, 0, None, "TimeoutError"))
        else:
            server = "webserver2" if t >= 105 or i % 2 else "webserver1"
            out.append(Request(t, 0.01, 200, server))
    return out


def test_outage_failed_and_complete_are_measured_from_the_fault():
    w = bench_failover.Window("p", "apache stop", 1, 103.0, records(), victim="webserver1")
    assert w.failed == 20
    assert abs(w.outage - (104.9 - 103.0)) < 1e-6  # sent at 104.9, timed out at 105.9
    assert abs(w.complete(lambda r: r.ok) - (104.9 + 1.0 - 103.0)) < 1e-6
    assert abs(w.complete(bench_failover.final(w)) - 2.9) < 1e-6
    assert w.pct(w.before(), .5) == 10.0
    assert len(w.failed_after(1.05)) == 9 and w.failed_after(2.0) == []  # failures: t in [103, 105)


def test_summary_gives_median_and_range_and_the_report_has_a_timeline(tmp_path):
    ws = [bench_failover.Window("p", "director crash", i, 103.0 + d, records()) for i, d in enumerate((0, .5, 1))]
    [row] = bench_failover.summary(ws)
    m, lo, hi = row["outage"]
    assert lo < m < hi and row["runs"] == 3
    page = report.write(tmp_path, ws, [row], ["p: first good response <90 s"], [], "test",
                        (["fault", "p", "wins"], [["director crash", "1.9 s", "tie"]]))
    text = page.read_text()
    assert text.count("<svg") == 3 and "director crash" in text and "<script" not in text
    assert "<li>p: first good response &lt;90 s</li>" in text
    assert "<h2>Side by side</h2>" in text and "<td>director crash</td><td>1.9 s</td><td>tie</td>" in text


def test_side_by_side_puts_each_fault_in_one_row_and_names_the_winner():
    ws = [bench_failover.Window("p", "director crash", 1, 103.0, records()),
          bench_failover.Window("q", "director crash", 1, 104.5, records())]
    ws += [bench_failover.Window(p, "standby crash", 1, 90.0, records()) for p in ("p", "q")]
    header, table = bench_failover.side_by_side(bench_failover.summary(ws))
    assert header == ["fault", "p", "q", "wins"]
    by_fault = {row[0]: row for row in table}
    # q's fault came 1.5 s later, so its last failed request is nearer to it: q wins
    assert by_fault["director crash"][3] == "q"
    assert by_fault["director crash"][1].startswith("1.9 [1.9-1.9] s, 20 failed")
    assert by_fault["standby crash"][3] == "tie"  # the same records: equal outage and failures


def test_a_load_line_is_read_back_as_the_request_it_records():
    line = json.dumps({"t": 1.5, "latency": 0.2, "status": 503, "server": None, "error": "HTTP 503"})
    r = Request.from_line(line)
    assert r == Request(1.5, 0.2, 503, None, "HTTP 503") and not r.ok
