"""Operators' SSH public keys, checked as OpenSSH reads them, before they reach a node.

A key that sshd would ignore (a typo in the base64, a DSA key trixie's OpenSSH no longer
accepts, a 1024-bit RSA key) must fail at lint, naming the key, not lock the operator out of a
node booted on bare metal. Pure functions: no OpenSSH needed on the host for the check.
"""
from __future__ import annotations

import base64
import binascii
import struct

# key type -> the smallest size accepted (bits; RSA only), None: fixed size
SUPPORTED = {
    "ssh-ed25519": None,
    "sk-ssh-ed25519@openssh.com": None,
    "ecdsa-sha2-nistp256": None,
    "ecdsa-sha2-nistp384": None,
    "ecdsa-sha2-nistp521": None,
    "sk-ecdsa-sha2-nistp256@openssh.com": None,
    "ssh-rsa": 2048,
}
REFUSED = {"ssh-dss": "DSA keys are gone from OpenSSH 9.8 (the image's sshd refuses them)"}


def _strings(blob: bytes) -> list[bytes]:
    """The SSH wire format's length-prefixed fields of a key blob."""
    out, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            raise ValueError("truncated")
        (n,) = struct.unpack(">I", blob[i:i + 4])
        if i + 4 + n > len(blob):
            raise ValueError("truncated")
        out.append(blob[i + 4:i + 4 + n])
        i += 4 + n
    return out


def problem(line: str) -> str | None:
    """Why sshd would not take `line` as an authorized key (None: it would)."""
    words = line.split()
    if len(words) < 2:
        return "not an OpenSSH public key: expected 'TYPE BASE64 [comment]', as in id_ed25519.pub"
    kind, data = words[0], words[1]
    if kind in REFUSED:
        return f"{kind}: {REFUSED[kind]}; use ssh-ed25519 (ssh-keygen -t ed25519)"
    if kind not in SUPPORTED:
        return (f"{kind!r} is not a key type this appliance accepts (one of {', '.join(SUPPORTED)}); "
                "options before the key (from=..., command=...) are not taken either")
    try:
        fields = _strings(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return f"the {kind} key's base64 is damaged (copied only in part?)"
    if not fields or fields[0] != kind.encode():
        return f"the key data says {fields[0][:40]!r} inside, not {kind}" if fields else "the key data is empty"
    minimum = SUPPORTED[kind]
    if minimum and len(fields) >= 3:
        bits = int.from_bytes(fields[2], "big").bit_length()
        if bits < minimum:
            return f"a {bits}-bit RSA key is too weak (at least {minimum}); use ssh-keygen -t ed25519"
    return None


def fingerprint(line: str) -> str:
    """SHA256:... as ssh-keygen -l prints it, for messages and `status`."""
    import hashlib
    digest = hashlib.sha256(base64.b64decode(line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
