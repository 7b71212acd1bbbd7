"""Pure functions from (cluster, node) to the files that node needs.

No side effects and only Jinja2 beyond the standard library, so the same code previews
files on the host and writes them inside the image at first boot.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from builder.profile import Cluster, Node

TEMPLATES = Path(__file__).with_name("templates")
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@dataclass(frozen=True)
class File:
    content: str
    mode: int = 0o644


def director_files(cluster: Cluster, node: Node, secret: str) -> dict[str, File]:
    """heartbeat and ldirectord configuration, as in the howto's section 4."""
    ctx = dict(cluster=cluster, node=node, hb=cluster.heartbeat,
               iface=cluster.network.interface, secret=secret)
    render = lambda name: _env.get_template(f"{name}.j2").render(ctx)  # noqa: E731
    return {
        "/etc/ha.d/ha.cf": File(render("ha.cf")),
        "/etc/ha.d/haresources": File(render("haresources")),
        "/etc/ha.d/authkeys": File(render("authkeys"), 0o600),
        "/etc/ha.d/ldirectord.cf": File(render("ldirectord.cf")),
    }
