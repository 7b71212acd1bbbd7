"""TLS on the real servers' port 443: one certificate per cluster, made by the builder, naming
every VIP, on the real servers' seeds only, served by Apache (builder/tls.py)."""
import stat
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509

from builder import contract, profile, render, seed, tls
from firstboot import configure
from tests.variants import with_services

TLS_SITE = {"vip": "172.20.40.101", "ports": [443, 80], "persistent": 300, "service": "https",
            "request": "health.html", "receive": "app ok"}


@pytest.fixture
def cluster():
    return profile.parse(with_services("redundant", TLS_SITE))


def test_only_a_service_on_443_makes_the_real_servers_speak_tls(cluster):
    assert cluster.serves_tls
    assert not profile.parse(with_services("redundant")).serves_tls
    assert tls.load_or_create(profile.parse(with_services("redundant")), Path("/nonexistent")) is None


def test_the_certificate_names_every_vip_and_is_kept(cluster, tmp_path):
    made = tls.load_or_create(cluster, tmp_path)
    cert = x509.load_pem_x509_certificate(made.cert.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ip_address("172.20.40.100"), ip_address("172.20.40.101")}
    assert cluster.domain in san.get_values_for_type(x509.DNSName)
    key = tls.cert_path(cluster, tmp_path).with_suffix(".key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert tls.load_or_create(cluster, tmp_path) == made  # re-seeding keeps it
    # a VIP added later is not named by the old one: a new certificate
    more = profile.parse(with_services("redundant", TLS_SITE, {"vip": "172.20.40.102", "port": 80}))
    again = tls.load_or_create(more, tmp_path)
    assert again != made and tls.covers(again.cert, more) and not tls.covers(made.cert, more)


def test_real_servers_get_the_certificate_key_and_an_apache_site_directors_the_certificate(cluster, tmp_path):
    made = tls.load_or_create(cluster, tmp_path)
    web = render.node_files(cluster, cluster.node("app1"), None, None, made)
    assert web[contract.TLS_CERT].content == made.cert and web[contract.TLS_KEY].mode == 0o600
    site = web[contract.APACHE_TLS_SITE].content
    for line in (f"Listen {contract.TLS_PORT}", "SSLEngine on", f"SSLCertificateFile {contract.TLS_CERT}",
                 f"SSLCertificateKeyFile {contract.TLS_KEY}", "LoadModule ssl_module"):
        assert line in site, line
    director = render.node_files(cluster, cluster.node("lvs-a"), "x" * 32, None, (made.cert, ""))
    assert director[contract.TLS_CERT].content == made.cert  # its https checks trust it
    assert not {contract.TLS_KEY, contract.APACHE_TLS_SITE} & director.keys()
    assert "service=https\n\tcheckport=443\n" in director[contract.LDIRECTORD_CF].content


def test_ldirectord_trusts_the_clusters_certificate_wherever_it_runs():
    """IO::Socket::SSL verifies a peer by default (ldirectord turns only the name check off):
    without the cluster's certificate as its CA file every https check failed and the TLS
    group's real servers were quiesced (dual-stack suite, 2026-12-02)."""
    units = Path(__file__).parents[2] / "images/director/mkosi.extra/etc/systemd/system"
    for unit in ("ldirectord.service.d", "heartbeat.service.d"):
        assert f"Environment=SSL_CERT_FILE={contract.TLS_CERT}\n" in (units / unit / "appliance.conf").read_text()


def test_a_real_servers_seed_carries_it_and_first_boot_refuses_a_seed_without(cluster, tmp_path):
    made = tls.load_or_create(cluster, tmp_path)
    with pytest.raises(ValueError, match="needs the cluster's certificate"):
        seed.appliance(cluster, cluster.node("app1"), seed.Keys(None))
    data = seed.appliance(cluster, cluster.node("app1"), seed.Keys(None, tls=made))
    assert data["tls"] == {"cert": made.cert, "key": made.key}
    director = seed.appliance(cluster, cluster.node("lvs-a"), seed.Keys("3f9a1c5e7b2d4086" * 4, tls=made))
    assert director["tls"] == {"cert": made.cert}  # never the key
    files = configure.files_for(configure.seed_from(data, "i-1", "realserver"))
    assert files[contract.TLS_KEY].content == made.key
    files = configure.files_for(configure.seed_from(director, "i-2", "director"))
    assert files[contract.TLS_CERT].content == made.cert and contract.TLS_KEY not in files
    del data["tls"]
    with pytest.raises(configure.SeedError, match="no usable certificate for app1"):
        configure.seed_from(data, "i-1", "realserver")


@pytest.mark.parametrize("service, message", [
    ({"vip": "172.20.40.101", "ports": [80, 443], "service": "https"}, "checks go to port 80"),
    ({"vip": "172.20.40.101", "port": 443}, "checks go to port 443"),
])
def test_https_checks_go_to_443_and_only_there(service, message):
    with pytest.raises(profile.ProfileError) as e:
        profile.parse(with_services("redundant", service))
    assert message in str(e.value) and 'service = "https"' in str(e.value)


def test_the_data_plane_bench_measures_a_tls_group_on_its_plain_port(cluster):
    """wrk against the direct figure (port 80): a TLS handshake per connection would be a
    different measurement."""
    from types import SimpleNamespace

    from lab import bench_dataplane
    from lab.client import Client
    segment = object()
    lab = SimpleNamespace(spec=cluster, segment=segment, client=lambda s, port=None: Client(
        segment, cluster.vip_of(s), port or s.check_port, Path("cluster.crt")))  # type: ignore[arg-type]
    urls = [c.url() for _, c in bench_dataplane.targets(lab)]  # type: ignore[arg-type]
    assert "http://172.20.40.101/" in urls and not [u for u in urls if u.startswith("https")]
