"""The lab's client on a dual-stack LAN: an IPv6 VIP is reached as http://[address]/, from the
client's IPv6 address on the namespace's bridge (no VM needed: a server in the namespace)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv6Address

import pytest

from builder.errors import LabError
from lab import net
from lab.client import Client


def test_urls_bracket_an_ipv6_host():
    assert Client(None, IPv4Address("172.20.40.100")).url("/x") == "http://172.20.40.100/x"  # type: ignore[arg-type]
    assert Client(None, IPv6Address("2001:db8:40::100"), 8443).url() == "http://[2001:db8:40::100]:8443/"  # type: ignore[arg-type]


def test_port_443_is_https_trusting_the_clusters_certificate_only(tmp_path):
    from builder import profile, tls
    from tests.unit.test_tls import TLS_SITE
    from tests.variants import with_services
    cluster = profile.parse(with_services("redundant", TLS_SITE))
    cert = tls.cert_path(cluster, tmp_path)
    tls.load_or_create(cluster, tmp_path)
    client = Client(None, IPv4Address("172.20.40.101"), 443, cert)  # type: ignore[arg-type]
    assert client.url("/x") == "https://172.20.40.101/x" and client.curl_tls() == ["--cacert", str(cert)]
    [spki] = client.chromium_tls()
    assert spki.startswith("--ignore-certificate-errors-spki-list=") and len(spki.split("=", 1)[1]) == 44
    assert Client(None, IPv4Address("172.20.40.101"), 80, cert).curl_tls() == []  # type: ignore[arg-type]
    with pytest.raises(LabError, match="needs the cluster's certificate"):
        Client(None, IPv4Address("172.20.40.101"), 443)  # type: ignore[arg-type]


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
