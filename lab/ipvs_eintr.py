"""Reproduce the kernel behaviour behind keepalived's VRRP hang (docs/split-brain.md), in a guest.

Starts an IPVS master sync daemon and stops it in the same netlink write, so the kernel thread
has not run yet when it is stopped: stop_sync_thread() then returns kthread_stop()'s -EINTR, and
netlink_rcv_skb() sends no answer at all for -EINTR. A caller that waits for the ACK (keepalived's
libipvs, ipvsadm) waits for ever. Prints what came back for each request and whether the
daemon is gone, then exits 0 if the stop went unanswered (the bug reproduced), 1 if answered.

    python3 ipvs_eintr.py IFACE        # as root, in a director; run it under `chrt -f 50`
"""
from __future__ import annotations

import select
import socket
import struct
import sys

NLMSG_ERROR, NLM_F_REQUEST, NLM_F_ACK = 2, 1, 4
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
IPVS_CMD_NEW_DAEMON, IPVS_CMD_DEL_DAEMON, IPVS_CMD_ATTR_DAEMON = 9, 10, 3
IPVS_DAEMON_ATTR_STATE, IPVS_DAEMON_ATTR_MCAST_IFN, IPVS_DAEMON_ATTR_SYNC_ID = 1, 2, 3
MASTER = 1


def attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def message(family: int, cmd: int, payload: bytes, seq: int) -> bytes:
    body = struct.pack("BBH", cmd, 1, 0) + payload
    return struct.pack("IHHII", 16 + len(body), family, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def replies(sock: socket.socket, wait: float) -> dict[int, int | bytes]:
    """seq -> error code (0: ACK) of the answers that arrive within `wait` seconds."""
    got: dict[int, int | bytes] = {}
    while select.select([sock], [], [], wait)[0]:
        data = sock.recv(65536)
        while len(data) >= 16:
            length, kind, _, seq, _ = struct.unpack("IHHII", data[:16])
            if kind != NLMSG_ERROR:
                got[seq] = data[16:length]
            elif seq not in got:  # an answer's own ACK follows it: keep the answer
                got[seq] = -struct.unpack("i", data[16:20])[0]
            data = data[(length + 3) & ~3:]
    return got


def ipvs_family(sock: socket.socket) -> int:
    sock.send(message(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, attr(CTRL_ATTR_FAMILY_NAME, b"IPVS\0"), 1))
    payload = replies(sock, 2)[1]
    assert isinstance(payload, bytes), f"CTRL_CMD_GETFAMILY: error {payload}"
    attrs = payload[4:]
    while attrs:
        length, kind = struct.unpack("HH", attrs[:4])
        if kind == CTRL_ATTR_FAMILY_ID:
            return struct.unpack("H", attrs[4:6])[0]
        attrs = attrs[(length + 3) & ~3:]
    raise RuntimeError("no IPVS generic netlink family (is ip_vs loaded?)")


def main(iface: str) -> int:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
    sock.bind((0, 0))
    family = ipvs_family(sock)
    state = attr(IPVS_DAEMON_ATTR_STATE, struct.pack("I", MASTER))
    start = attr(IPVS_CMD_ATTR_DAEMON, state + attr(IPVS_DAEMON_ATTR_MCAST_IFN, iface.encode() + b"\0")
                 + attr(IPVS_DAEMON_ATTR_SYNC_ID, struct.pack("I", 0)))
    stop = attr(IPVS_CMD_ATTR_DAEMON, state)
    # one write, two requests: the kernel handles both before its new thread can run
    sock.send(message(family, IPVS_CMD_NEW_DAEMON, start, 10) + message(family, IPVS_CMD_DEL_DAEMON, stop, 11))
    got = replies(sock, 3)
    print(f"start master: {'ACK' if got.get(10) == 0 else got.get(10, 'no answer')}; "
          f"stop master: {'ACK' if got.get(11) == 0 else got.get(11, 'no answer in 3 s')}")
    return 0 if 11 not in got else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "eth1"))
