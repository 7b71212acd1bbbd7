"""The data-plane bench's pure parts: what it measures on a profile, wrk's figures, the table."""
from types import SimpleNamespace

import pytest

from builder import profile
from builder.errors import LabError
from lab import bench_dataplane as dp
from lab.client import Client
from lab.paths import ROOT

WRK = """Running 2s test @ http://[2001:db8:40::100]/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.66ms    3.94ms  38.24ms   89.43%
    Req/Sec     0.96k   213.31     1.37k    70.00%
  Latency Distribution
     50%  344.00us
     75%    5.54ms
     90%    8.58ms
     99%    1.20s
  1911 requests in 2.00s, 7.86MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    953.31
Transfer/sec:      3.92MB
"""


def test_reads_requests_per_second_and_both_quantiles_in_milliseconds_and_counts_every_error():
    assert dp.parse(WRK) == pytest.approx((953.31, 0.344, 1200.0, 7))


def test_a_wrk_that_could_not_connect_says_why():
    with pytest.raises(dp.WrkError, match="unable to connect"):
        dp.parse("unable to connect to 172.20.40.100:80 Connection refused\n")


def test_measures_every_vip_and_the_first_real_server_straight_in_each_family():
    spec = profile.load(ROOT / "profiles" / "dual-stack.toml")
    segment = object()
    cluster = SimpleNamespace(spec=spec, segment=segment,
                              client=lambda s, port=None: Client(segment, spec.vip_of(s), port or s.check_port))  # type: ignore[arg-type]
    found = dp.targets(cluster)  # type: ignore[arg-type]
    # the TLS group is measured on its plain port, like the direct figure
    assert [t for t, _ in found] == ["VIP 172.20.40.100", "VIP [2001:db8:40::100]", "VIP 172.20.40.101",
                                     "direct app1 172.20.40.21", "direct app1 [2001:db8:40::21]"]
    assert dp.argv(found[1][1].url("/"), 4, 10) == ["wrk", "-t", "1", "-c", "4", "-d", "10s", "--latency",
                                                    "--timeout", "5s", "http://[2001:db8:40::100]/"]
    # an IPv4-only profile measures no IPv6 path, even if a real server had an IPv6 address
    howto = profile.load(ROOT / "profiles" / "howto.toml")
    cluster = SimpleNamespace(spec=howto, segment=segment,
                              client=lambda s, port=None: Client(segment, howto.vip_of(s), port or s.check_port))  # type: ignore[arg-type]
    assert [t for t, _ in dp.targets(cluster)] == ["VIP 192.168.0.105", "direct webserver1 192.168.0.101"]  # type: ignore[arg-type]


def test_the_table_gives_each_vip_its_p50_against_the_direct_figure_of_the_same_family_and_count():
    points = [dp.Point("VIP 172.20.40.100", "IPv4", 4, 900, 3.0, 9.0, 0),
              dp.Point("direct app1 172.20.40.21", "IPv4", 4, 1000, 2.5, 8.0, 0),
              dp.Point("VIP [2001:db8:40::100]", "IPv6", 4, 800, 5.0, 9.0, 1)]
    rows = dp.table(points)
    assert rows[2].endswith("| 1.20 |")     # 3.0 / 2.5
    assert rows[3].endswith("|  |")          # the direct figure itself
    assert rows[4].endswith("|  |")          # no IPv6 direct figure at 4 connections


def test_the_hop_figure_is_the_median_reply_and_no_reply_says_so():
    text = "".join(f"64 bytes from 172.20.40.11: icmp_seq={i} ttl=64 time={t} ms\n"
                   for i, t in enumerate((0.9, 3.2, 0.7, 1.1, 0.8)))
    assert dp.ping_p50(text) == 0.9
    with pytest.raises(LabError, match="no reply"):
        dp.ping_p50("5 packets transmitted, 0 received, 100% packet loss\n")


def _seg(t: float, src: str, dst: str, seq: str, ack: int, length: int) -> str:
    family = "IP6" if ":" in src else "IP"
    return (f"{t:.6f} {family} {src} > {dst}: Flags [P.], seq {seq}, ack {ack}, win 502, "
            f"options [nop,nop,TS val 1 ecr 2], length {length}: HTTP\n")


def test_each_leg_of_a_request_through_a_vip_is_timed_from_the_captures():
    """Two keep-alive requests on one connection; the director's tap sees each request in and
    out; pure ACKs (no seq range) and another port's traffic are no request."""
    c, v = "172.20.40.254.51208", "172.20.40.100.80"  # DR: the real server sees the VIP too
    client = (_seg(10.000, c, v, "1000:1074", 2000, 74) + _seg(10.010, v, c, "2000:2300", 1074, 300)
              + f"10.011000 IP {c} > {v}: Flags [.], ack 2300, win 500, length 0\n"
              + _seg(10.020, c, v, "1074:1148", 2300, 74) + _seg(10.032, v, c, "2300:2600", 1148, 300)
              + _seg(10.040, "172.20.40.254.40000", "172.20.40.100.443", "1:9", 1, 8))
    director = _seg(10.001, c, v, "1000:1074", 2000, 74) + _seg(10.003, c, v, "1000:1074", 2000, 74) \
        + _seg(10.0215, c, v, "1074:1148", 2300, 74) + _seg(10.0245, c, v, "1074:1148", 2300, 74)
    real = _seg(10.004, c, v, "1000:1074", 2000, 74) + _seg(10.009, v, c, "2000:2300", 1074, 300) \
        + _seg(10.025, c, v, "1074:1148", 2300, 74) + _seg(10.031, v, c, "2300:2600", 1148, 300)
    legs = dp.legs(dp.sightings(client, 80), dp.sightings(real, 80), dp.sightings(director, 80))
    expected = {"round trip": (10, 12), "to the director": (1, 1.5), "in the director": (2, 3),
                "director to real server": (1, 0.5), "in the real server": (5, 6), "real server to client": (1, 1)}
    for leg, (first, second) in expected.items():
        assert legs[leg] == pytest.approx((first + second) / 2, abs=1e-6), leg
    assert legs["requests"] == 2 and "client to real server" not in legs
    assert sum(legs[leg] for leg in dp.LEGS if leg in legs) == pytest.approx(legs["round trip"])


def test_a_direct_request_has_no_director_leg_and_an_unanswered_one_does_not_count():
    c, r = "2001:db8:40::254.51210", "2001:db8:40::21.80"
    client = _seg(5.0, c, r, "1:80", 1, 79) + _seg(5.004, r, c, "1:500", 80, 499) + _seg(5.01, c, r, "80:160", 500, 80)
    real = _seg(5.001, c, r, "1:80", 1, 79) + _seg(5.003, r, c, "1:500", 80, 499)
    legs = dp.legs(dp.sightings(client, 80), dp.sightings(real, 80))
    assert legs["requests"] == 1 and legs["client to real server"] == pytest.approx(1)
    assert legs["in the real server"] == pytest.approx(2) and "in the director" not in legs
    assert any("in the director" in line for line in dp.legs_table({"IPv4 VIP": {"in the director": 1.0,
                                                                                 "requests": 3}}))
