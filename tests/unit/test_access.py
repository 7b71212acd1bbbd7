"""[access]: operators' SSH keys are checked as sshd would take them, at lint, naming the key."""
from __future__ import annotations

import tomllib

import pytest

from builder import profile, sshkeys
from tests.conftest import ROOT

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBcDZuEim3vzgTQuANIqmMxYAmnOUCloUqRZDvZMQPLH alice@desk"
RSA_1024 = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDE9GhbyWJsfGdmUKBWnti4958K2zmAvCPgMAbIpmsfJPg51kx5qxrGy4C8BDJ"
            "xq2poTt2bzCmBPLuQ8QaMoIjM1qWL5YrCbgmCCgM/GryfWWkloACQmhxQY+3r5WAj/aNoogTe8MoQXCq9wo/Ol7k6kg7l7aXHra"
            "SYInmG8kcFGQ== weak@old")
RSA_3072 = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDH9S2dFXN+6QE4DMVRR0HmMrYfTBiJsi4duvGgzAJO+hRKmKRUVBuMkehPpJyW"
            "onya0cpb9ByaAjyAEPRalJcnCnoHXg0BX1PUQR2Qr8nl+IbhecvIVypxuSsV8YB/tOSlY0VvrQWRIDCM5pFN9zYQcUITMUjoL9Zk"
            "ky023vWFTrenpumKZMrIXQOvCH9oFlkO1pDHUSCRzjjkWxOY+mx+Y+sUm3+Np5CeRCMlNJMdvuiBKxp58tguzF4hf5sRjPt4jVQY"
            "YnfHYrWgH2OdrhYHZTpcNPMPv8CiTr+wAL+V/gKc53r5aF9C5N+RcdiqD6T0m48HmlLe6f4u1LgQRpeU9MEapQUf3rECOK4Ly05i"
            "4SJRkfp3WFUki4PvQZ4hRqBmOfbLh6e8x4qFX6gAcqHDjfIUO0VUQek6ymX/Afy8PujHGGvJEnHjwVWfjqonUAHfJf/CYZ08Be/F"
            "h9aB3scg05LYL05TGGn8EzNamzJnHgcskOicZooQYjuKm1viHCk= bob@desk")


def howto(**access) -> dict:
    data = tomllib.loads((ROOT / "profiles/howto.toml").read_text())
    return {**data, "access": access} if access else data


def test_good_keys_pass_and_the_seed_carries_them():
    cluster = profile.parse(howto(ssh_keys=[ED25519, "  " + RSA_3072 + "  "]))
    assert cluster.access.ssh and cluster.access.ssh_keys == (ED25519, RSA_3072)
    assert profile.parse(profile.to_dict(cluster)) == cluster
    assert not profile.parse(howto()).access.ssh  # no keys: no sshd


@pytest.mark.parametrize("line, says", [
    (RSA_1024, "1024-bit RSA key is too weak"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP== old@box", "DSA keys are gone"),
    (ED25519.replace("AAAAC3Nza", "AAAAC3Xza"), "says"),
    (ED25519[:60], "damaged"),
    ('from="10.0.0.1" ' + ED25519, "options before the key"),
    ("AAAAC3NzaC1lZDI1NTE5AAAAIBcDZuEim3vzgTQu", "not an OpenSSH public key"),
])
def test_a_key_sshd_would_not_take_fails_lint_naming_it(line, says):
    with pytest.raises(profile.ProfileError) as e:
        profile.parse(howto(ssh_keys=[ED25519, line]))
    [problem] = e.value.problems
    assert problem.startswith("access.ssh_keys: key 2 (") and says in problem, problem


def test_key_files_are_read_relative_to_the_profile_and_a_missing_one_is_named(tmp_path):
    text = (ROOT / "profiles/howto.toml").read_text()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/team.pub").write_text(f"# the team\n{RSA_3072}\n\n{ED25519}\n")
    (tmp_path / "p.toml").write_text(
        text + f'\n[access]\nssh_keys = ["{ED25519}"]\nssh_key_files = ["keys/team.pub"]\n')
    cluster = profile.load(tmp_path / "p.toml")
    assert cluster.access.ssh_keys == (ED25519, RSA_3072)  # each key once, in order
    assert "ssh_key_files" not in profile.to_dict(cluster)["access"]  # a host path: not on the seed
    (tmp_path / "q.toml").write_text(text + '\n[access]\nssh_key_files = ["keys/nobody.pub"]\n')
    with pytest.raises(profile.ProfileError, match=r"access.ssh_key_files: .*keys/nobody.pub: No such file"):
        profile.load(tmp_path / "q.toml")
    (tmp_path / "keys/bad.pub").write_text(RSA_1024 + "\n")
    (tmp_path / "r.toml").write_text(text + '\n[access]\nssh_key_files = ["keys/bad.pub"]\n')
    with pytest.raises(profile.ProfileError, match=r"keys/bad.pub line 1 \(ssh-rsa AAAAB3NzaC1y...\): a 1024-bit"):
        profile.load(tmp_path / "r.toml")


def test_the_fingerprint_is_the_one_ssh_keygen_prints():
    # `ssh-keygen -lf` of the key above printed this
    assert sshkeys.fingerprint(ED25519) == "SHA256:NFCdOZ4al2/++QS34rhvNCdBues888GC9Qd1uoP5nfQ"


def test_each_node_gets_its_own_host_key_once_and_known_hosts_names_them_all(tmp_path):
    from builder import hostkeys
    cluster = profile.load(ROOT / "profiles/howto.toml")
    keys = hostkeys.load_or_create(cluster, tmp_path)
    publics = [k.public.split()[1] for k in keys.values()]
    assert len(set(publics)) == len(cluster.nodes) == 4  # never shared between nodes
    assert all(k.private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") for k in keys.values())
    folder = hostkeys.directory(cluster, tmp_path)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all((folder / n.name).stat().st_mode & 0o777 == 0o600 for n in cluster.nodes)
    # made once: a second run (a new seed) keeps every key
    assert hostkeys.load_or_create(cluster, tmp_path) == keys
    text = hostkeys.write_known_hosts(cluster, keys, tmp_path).read_text()
    for n in cluster.nodes:
        line = next(x for x in text.splitlines() if x.startswith(f"{n.name},"))
        assert f",{n.address} ssh-ed25519 {keys[n.name].public.split()[1]}" in line
        assert sshkeys.problem(line.split(" ", 1)[1]) is None  # a key sshd takes


def test_a_node_with_access_gets_key_only_sshd_its_keys_and_its_own_host_key():
    from builder import hostkeys, render
    cluster = profile.parse(howto(ssh_keys=[ED25519, RSA_3072]))
    key = hostkeys.generate("root@loadb1")
    files = render.node_files(cluster, cluster.node("loadb1"), "k" * 32, (key.private, key.public))
    conf = files[render.SSHD_CONFIG].content.splitlines()
    for line in ("PermitRootLogin prohibit-password", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "AuthenticationMethods publickey", "UsePAM no",
                 "AuthorizedKeysFile /etc/ssh/authorized_keys/%u", f"HostKey {render.HOST_KEY}"):
        assert line in conf
    assert files[render.AUTHORIZED_KEYS].content == f"{ED25519}\n{RSA_3072}\n"
    assert files[render.HOST_KEY].mode == 0o600 and files[render.HOST_KEY].content == key.private
    # no [access]: no sshd configuration, no keys, nothing for sshd to start with
    plain = profile.parse(howto())
    assert not [p for p in render.node_files(plain, plain.node("webserver1"), None) if p.startswith("/etc/ssh")]


def test_the_seed_carries_the_node_host_key_and_first_boot_writes_it(tmp_path):
    from builder import hostkeys, render, seed
    from firstboot import configure
    cluster = profile.parse(howto(ssh_keys=[ED25519]))
    keys = {n: (k.private, k.public) for n, k in hostkeys.load_or_create(cluster, tmp_path / "s").items()}
    with pytest.raises(ValueError, match="needs its host key"):
        seed.write_seeds(cluster, seed.Keys("3f9a1c5e7b2d4086" * 4), tmp_path / "none", ["webserver2"])
    [iso] = seed.write_seeds(cluster, seed.Keys("3f9a1c5e7b2d4086" * 4, keys), tmp_path / "iso", ["webserver2"])
    assert iso.stat().st_mode & 0o777 == 0o600
    d = tmp_path / "mounted"
    d.mkdir()
    for name, data in seed.read_iso(iso)[1].items():
        (d / name).write_bytes(data)
    s = configure.read_seed(d, "realserver")
    files = configure.files_for(s)
    assert files[render.HOST_KEY].content == keys["webserver2"][0]
    assert files[render.HOST_KEY + ".pub"].content == keys["webserver2"][1] + "\n"
    assert files[render.AUTHORIZED_KEYS].content == ED25519 + "\n"
    # a seed whose host key was taken out is refused, saying how to remake it
    data = (d / "appliance.json").read_text().replace('"ssh_host_key"', '"no_host_key"')
    (d / "appliance.json").write_text(data)
    with pytest.raises(configure.SeedError, match="no usable host key for webserver2"):
        configure.read_seed(d, "realserver")
