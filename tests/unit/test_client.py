"""The lab's client on a dual-stack LAN: an IPv6 VIP is reached as http://[address]/, from the
client's IPv6 address on the namespace's bridge (no VM needed: a server in the namespace)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv6Address

import pytest

from lab import net
from lab.client import Client


def test_urls_bracket_an_ipv6_host():
    assert Client(None, IPv4Address("172.20.40.100")).url("/x") == "http://172.20.40.100/x"  # type: ignore[arg-type]
    assert Client(None, IPv6Address("2001:db8:40::100"), 443).url() == "http://[2001:db8:40::100]:443/"  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_the_segment_carries_the_clients_ipv6_address_and_the_client_speaks_it(tmp_path):
    (tmp_path / "index.html").write_text('<p data-server="v6-server">hello</p>\n')
    with net.Segment("lvs-appliance-unit-v6", "10.250.0.254", 24, "2001:db8:250::fe", 64) as segment:
        assert "inet6 2001:db8:250::fe/64" in segment.run("ip", "-6", "addr", "show", "dev", net.LAN).stdout
        server = subprocess.Popen(["ip", "netns", "exec", segment.netns, sys.executable, "-m", "http.server",
                                   "--bind", "2001:db8:250::fe", "--directory", str(tmp_path), "8099"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = Client(segment, IPv6Address("2001:db8:250::fe"), 8099)
            deadline = time.monotonic() + 10
            while not (answer := client.get("/index.html", timeout=2)).ok and time.monotonic() < deadline:
                time.sleep(0.2)
            assert answer.ok and answer.server == "v6-server"
        finally:
            server.kill()
            server.wait()
    assert not net.exists("lvs-appliance-unit-v6")
