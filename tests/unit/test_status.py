"""`appliance status` (firstboot/status.py): the kernel's tables read right, and a report that
says what an operator must see first (a hung stack, a second VIP holder, a quiesced server)."""
from __future__ import annotations

from firstboot import status

IPVSADM = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  172.20.40.100:80 wrr
  -> 172.20.40.21:80              Route   3      4          11
  -> 172.20.40.22:80              Route   0      0          2
  -> 127.0.0.1:80                 Local   0      0          0
TCP  172.20.40.100:443 wlc persistent 300
  -> 172.20.40.21:443             Route   1      0          0
FWM  1 wrr persistent 300
  -> 172.20.40.21:0               Route   3      1          0
"""


def test_the_ipvs_table_is_read_with_weights_and_connections():
    web, tls, group = status.parse_ipvs(IPVSADM)
    assert (web.protocol, web.vip, web.port, web.scheduler) == ("TCP", "172.20.40.100", 80, "wrr")
    assert (group.protocol, group.vip, group.port) == ("FWM", "1", 0)  # a port group: its mark
    assert group.real_servers == (status.RealServer("172.20.40.21", 0, 3, 1, 0),)
    assert web.real_servers[0] == status.RealServer("172.20.40.21", 80, 3, 4, 11)
    assert [r.weight for r in web.real_servers] == [3, 0, 0] and tls.port == 443
    assert status.parse_ipvs("") == []


def test_sync_daemons_are_read_from_ipvsadm():
    text = "master sync daemon (mcast=eth1, syncid=51)\nbackup sync daemon (mcast=eth1, syncid=51)\n"
    assert status.parse_sync(text) == ["master", "backup"] and status.parse_sync("") == []


def test_the_report_puts_a_hang_and_a_second_holder_in_plain_words():
    s = status.Status("lvs-a", "director", "172.20.40.11", "keepalived", state="HUNG", answering=False,
                      second_holder="52:54:00:28:0c:02", health_age=1.2, vips=["172.20.40.100"],
                      services=status.parse_ipvs(IPVSADM), sync=["master"], synced_connections=17,
                      peer_heard_age=42.4)
    text = status.table(s)
    assert status.as_dict(s)["services"][0]["real_servers"][0] == {
        "address": "172.20.40.21", "port": 80, "weight": 3, "active": 4, "inactive": 11}
    assert "keepalived: HUNG NOT ANSWERING, checked 1 s ago; peer last heard 42 s ago" in text
    assert "holds: 172.20.40.100  (ALSO HELD BY 52:54:00:28:0c:02)" in text
    assert "172.20.40.22:80     quiesced" in text and "weight 3" in text
    assert "sync daemons: master; 17 connections in IPVS" in text


PROC_IP_VS = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  AC142864:0050 wrr
  -> AC142815:0050      Route   3      4          11
  -> 7F000001:0050      Local   0      0          0
"""


PROC_IP_VS6 = """TCP  [2001:0db8:0040:0000:0000:0000:0000:0100]:0050 wrr
  -> [2001:0db8:0040:0000:0000:0000:0000:0022]:0050      Route   2      0          3
"""


def test_the_kernels_own_table_reads_as_ipvsadm_does():
    [web, web6] = status.parse_ipvs(status.from_proc(PROC_IP_VS + PROC_IP_VS6))
    assert (web.vip, web.port, web.scheduler) == ("172.20.40.100", 80, "wrr")
    assert web.real_servers[0] == status.RealServer("172.20.40.21", 80, 3, 4, 11)
    assert web.real_servers[1].address == "127.0.0.1"
    # IPv6: written out in full with a hex port in /proc (a status once said port 50)
    assert (web6.vip, web6.port) == ("[2001:db8:40::100]", 80)
    assert web6.real_servers == (status.RealServer("[2001:db8:40::22]", 80, 2, 0, 3),)


def test_sync_daemons_are_found_by_their_kernel_threads(tmp_path):
    for pid, name in ((1, "systemd"), (2, "kthreadd"), (77, "ipvs-b:0:0"), (78, "ipvs-m:0:0"), (79, "ipvs-e:0:0")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(name + "\n")
    assert status.sync_threads(tmp_path) == ["master", "backup"]  # no children list: every process
    children = tmp_path / "2/task/2/children"
    children.parent.mkdir(parents=True)
    children.write_text("77 78 79 ")
    (tmp_path / "1" / "comm").unlink()  # kthreadd's children only
    assert status.sync_threads(tmp_path) == ["master", "backup"]
    children.write_text("77 79 ")  # the master stopped: its thread is gone
    assert status.sync_threads(tmp_path) == ["backup"]
    (tmp_path / "80").mkdir()  # a thread caught before the kernel named it is asked again
    (tmp_path / "80" / "comm").write_text("kthreadd\n")
    children.write_text("77 79 80 ")
    assert status.sync_threads(tmp_path) == ["backup"]
    (tmp_path / "80" / "comm").write_text("ipvs-m:0:0\n")
    assert status.sync_threads(tmp_path) == ["master", "backup"]
    (tmp_path / "77" / "comm").write_text("kworker/0:1\n")  # a thread's name is read once
    assert status.sync_threads(tmp_path) == ["master", "backup"]


def test_a_real_servers_vips_are_its_loopbacks_host_addresses_of_both_families(monkeypatch):
    monkeypatch.setattr(status, "_ip", lambda *args: (
        "1: lo    inet 127.0.0.1/8 scope host lo\n1: lo    inet 172.20.40.100/32 scope global lo\n"
        "1: lo    inet6 ::1/128 scope host noprefixroute\n1: lo    inet6 2001:db8:40::100/128 scope global\n"))
    assert status.lo_vips() == ["172.20.40.100", "2001:db8:40::100"]
