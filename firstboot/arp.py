"""ARP on the cluster LAN, for the HA watchdog: who else answers for a VIP, and telling the LAN
that this director has it.

A duplicate-address probe (RFC 5227: sender IP 0.0.0.0, so no neighbour learns anything from
it) is answered by every host that has the VIP on that segment's interface, and by no real
server: they hold it on `lo` with arp_ignore=1. So a reply from another MAC while this director
holds the VIP means two directors hold it, whatever their stacks believe. The raw socket keeps
the probe to a fraction of a second (arping waits whole seconds) inside the watchdog's loop.
"""
from __future__ import annotations

import select
import socket
import struct
import time
from ipaddress import IPv4Address

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
REQUEST, REPLY = 1, 2


def _frame(src_mac: bytes, op: int, sender_ip: bytes, target_ip: bytes, dst: bytes = BROADCAST) -> bytes:
    eth = dst + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + src_mac + sender_ip + b"\0" * 6 + target_ip
    return eth + arp


def _mac(sock: socket.socket) -> bytes:
    return sock.getsockname()[4]


def _open(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((iface, ETH_P_ARP))
    return sock


def other_holder(iface: str, ip: str, timeout: float = 0.3) -> str | None:
    """The MAC address of another host on `iface` that answers for `ip`, or None."""
    target = IPv4Address(ip).packed
    with _open(iface) as sock:
        mine = _mac(sock)
        sock.send(_frame(mine, REQUEST, b"\0" * 4, target))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            pkt = sock.recv(128)
            if len(pkt) < 42 or pkt[12:14] != struct.pack("!H", ETH_P_ARP):
                continue
            op, sha, spa = struct.unpack("!H", pkt[20:22])[0], pkt[22:28], pkt[28:32]
            if op == REPLY and spa == target and sha != mine:
                return sha.hex(":")
    return None


def holder(iface: str, ip: str) -> str | None:
    """other_holder, where a NIC that is down (a cut cable) hears nobody: None."""
    try:
        return other_holder(iface, ip)
    except OSError:
        return None


def announce(iface: str, ip: str, count: int = 3, gap: float = 0.2) -> None:
    """Gratuitous ARP requests for `ip` from this interface: every neighbour that has an entry
    for it (pointing at the director that gave it up) updates it to this one."""
    addr = IPv4Address(ip).packed
    with _open(iface) as sock:
        frame = _frame(_mac(sock), REQUEST, addr, addr)
        for i in range(count):
            if i:
                time.sleep(gap)
            sock.send(frame)
