"""Rendered files for howto.toml equal the howto's text (tests/golden, verbatim) line for line,
except the documented corrections listed here."""
from pathlib import Path

import pytest

from builder import profile, render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
CORRECTIONS = {  # howto line -> what we render, and why
    # Debian ships ipfail under /usr/libexec
    "respawn hacluster /usr/lib/heartbeat/ipfail": "respawn hacluster /usr/libexec/heartbeat/ipfail",
    # the secret comes from the secret file, never "password"
    "3 md5 password": "3 md5 S3cret-from-the-secret-file",
}


def tokens(text):
    """Lines as whitespace-split tokens: the wiki lost ldirectord.cf's indentation."""
    return [line.split() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["ha.cf", "haresources", "authkeys", "ldirectord.cf"])
def test_director_file_matches_the_howto(name):
    c = profile.load(ROOT / "profiles" / "howto.toml")
    files = render.director_files(c, c.node("loadb1"), "S3cret-from-the-secret-file")
    golden = GOLDEN.joinpath(name).read_text()
    expected = "\n".join(CORRECTIONS.get(line, line) for line in golden.splitlines())
    assert tokens(files[f"/etc/ha.d/{name}"].content) == tokens(expected)


def test_authkeys_is_root_only_and_ldirectord_options_are_indented():
    c = profile.load(ROOT / "profiles" / "howto.toml")
    files = render.director_files(c, c.node("loadb1"), "x" * 32)
    assert files["/etc/ha.d/authkeys"].mode == 0o600
    lines = files["/etc/ha.d/ldirectord.cf"].content.splitlines()
    after_virtual = lines[lines.index("virtual=192.168.0.105:80") + 1:]
    assert after_virtual and all(line.startswith("\t") for line in after_virtual if line)
