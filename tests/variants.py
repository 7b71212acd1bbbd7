"""Profiles the tests derive from the shipped ones: a second site on the link profiles, the same
on a dual-stack LAN. Data, so that both the unit tests and the image's own tools (boot tests)
check the same files."""
from __future__ import annotations

import tomllib
from pathlib import Path

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
# a second site: its own VIP, 80 + 443 as one firewall mark, a client kept on one real server
SITE = {"vip": "172.20.40.101", "ports": [80, 443], "persistent": 300, "scheduler": "wrr",
        "request": "health.html", "receive": "app ok", "checkinterval": 2, "checktimeout": 5}
SITE6 = {"vip": "2001:db8:40::100", "port": 80, "request": "health.html", "receive": "app ok"}
GROUP6 = {"vip": "2001:db8:40::101", "ports": [80, 443], "persistent": 300, "request": "health.html",
          "receive": "app ok"}


def with_services(name: str, *extra: dict) -> dict:
    """The shipped profile `name` with `extra` services after its own."""
    data = tomllib.loads((PROFILES / f"{name}.toml").read_text())
    data["services"] = data["services"] + list(extra)
    return data


def dual_stack(name: str, *extra: dict) -> dict:
    """`name` on a dual-stack LAN: prefix6, every node's address6 (its IPv4 host number)."""
    data = with_services(name, *extra)
    data["network"] = {**data["network"], "prefix6": "2001:db8:40::/64", "gateway6": "2001:db8:40::1"}
    for role in ("directors", "real_servers"):
        data[role] = [{**n, "address6": f"2001:db8:40::{n['address'].rsplit('.', 1)[1]}"} for n in data[role]]
    return data


# name -> profile data, for the boot tests' check of every profile's files in the image: each
# link profile on a dual-stack LAN with an IPv6 site, an IPv6 group and the IPv4 second site
VARIANTS = {f"{name}+dual-stack": dual_stack(name, SITE6, GROUP6, SITE) for name in ("redundant", "keepalived")}
