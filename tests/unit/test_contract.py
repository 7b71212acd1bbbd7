"""One fact, one place: the values builder/contract.py states appear nowhere else in the code,
and the image's unit files and scripts, which cannot import it, use exactly its values."""
from __future__ import annotations

import ast
import re

from builder import contract
from tests.conftest import ROOT

FACTS = {name: value for name, value in vars(contract).items()
         if name.isupper() and isinstance(value, str) and len(value) > 3}
SOURCES = sorted(p for d in ("builder", "firstboot", "lab") for p in (ROOT / d).rglob("*.py")
                 if p.name != "contract.py")
IMAGE_FILES = sorted(p for p in [*(ROOT / "images").rglob("*"), *(ROOT / "firstboot").glob("*.service")]
                     if p.is_file() and "mkosi.conf" not in p.name)


def string_constants(tree: ast.AST):
    """String literals that are not docstrings (prose may name a fact; code must import it)."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_no_contract_value_is_written_out_in_the_code():
    found = []
    for path in SOURCES:
        for node in string_constants(ast.parse(path.read_text())):
            for name, value in FACTS.items():
                if value in node.value:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {value!r} is contract.{name}")
    assert not found, "import these from builder/contract.py:\n" + "\n".join(found)


def test_image_files_use_the_contract_values():
    """Unit files and shell scripts name the state directory only whole (the state partition's
    bind) or as its 'configured' flag, and keepalived's runtime files only as the contract says."""
    for path in IMAGE_FILES:
        text = path.read_text(errors="replace")
        for used in re.findall(re.escape(contract.STATE_DIR) + r"[^\s\"']*", text):
            assert used in (contract.STATE_DIR, contract.CONFIGURED, contract.NODE_JSON), f"{path}: {used}"
        for used in re.findall(r"/run/keepalived[^\s\"']*|/run/vrrp\.pid", text):
            assert used in (contract.KEEPALIVED_STATE, contract.KEEPALIVED_VRRP_PID, f"{contract.KEEPALIVED_STATE}.new",
                            contract.KEEPALIVED_CHECKERS_PID, "/run/keepalived"), f"{path}: {used}"


def test_keepalived_runs_vrrp_and_its_checkers_as_two_daemons_from_the_contracts_files():
    """`builder apply` reloads the checkers alone (firstboot/appliance.py): that holds only if
    the units run the two halves from the files the renderer writes, checkers first."""
    units = ROOT / "images/director/mkosi.extra"
    checkers = (units / "usr/lib/systemd/system" / contract.KEEPALIVED_CHECKERS_UNIT).read_text()
    vrrp = (units / "etc/systemd/system" / f"{contract.KEEPALIVED_UNIT}.d/appliance.conf").read_text()
    (start,) = re.findall(r"^ExecStart=(/.*)$", checkers, re.M)
    assert {"--check", f"--use-file={contract.KEEPALIVED_CHECKERS_CONF}",
            f"--pid={contract.KEEPALIVED_CHECKERS_PID}"} <= set(start.split())
    assert f"ConditionFileNotEmpty={contract.KEEPALIVED_CHECKERS_CONF}\n" in checkers
    (start,) = re.findall(r"^ExecStart=(/.*)$", vrrp, re.M)
    assert "--vrrp" in start.split() and "--use-file" not in start  # Debian's keepalived.conf
    assert contract.KEEPALIVED_CONF == "/etc/keepalived/keepalived.conf"
    (after,) = re.findall(r"^After=(.*)$", vrrp, re.M)
    assert contract.KEEPALIVED_CHECKERS_UNIT in after.split()  # started after, stopped before the table


def test_a_boot_on_trial_is_the_same_fact_for_the_unit_and_the_command():
    unit = ROOT / "images/base/mkosi.extra/usr/lib/systemd/system/appliance-trial-failed.service"
    assert f"ConditionPathExists={contract.TRIAL_BOOT_VAR}\n" in unit.read_text()


def test_the_contract_is_consistent():
    assert contract.NODE_JSON.startswith(contract.STATE_DIR + "/")
    assert contract.CONFIGURED.startswith(contract.STATE_DIR + "/")
    assert re.fullmatch(contract.READY_PATTERN, f"{contract.READY} node=a role=director address=10.0.0.1 instance=x")
    assert re.match(contract.PROBLEM_PATTERN, f"{contract.NOT_CONFIGURED}: no seed")
    for path in (contract.KEEPALIVED_NOTIFY_FIFO, contract.KEEPALIVED_STATE_DUMP):
        assert path.startswith("/run/keepalived/"), "the unit's RuntimeDirectory"


def test_first_boots_unit_outlasts_its_longest_wait_and_the_lab_outlasts_the_unit():
    """A unit killed by its own timeout while first boot still waits for a late NIC leaves the
    node NOT CONFIGURED for good; a lab that gives up before the unit has said so reports a hang."""
    unit = (ROOT / "firstboot/appliance-firstboot.service").read_text()
    (timeout,) = re.findall(r"^TimeoutStartSec=(\d+)$", unit, re.M)
    assert contract.NIC_WAIT + 60 <= int(timeout) < contract.BOOT_TIMEOUT


def test_the_makefile_builds_the_contracts_release_by_default():
    makefile = (ROOT / "Makefile").read_text()
    assert f"RELEASE ?= {contract.RELEASE}\n" in makefile


def test_the_code_staged_into_the_image_imports_only_staged_code():
    """A module the image lacks fails only on a booted node (the watchdog's ImportError, seen in
    a suite run): every project import of a staged module must be staged too."""
    from builder.image import STAGED
    staged, ours = {p for p in STAGED if p.endswith(".py")}, ("builder", "firstboot")
    missing = []
    for path in sorted(staged):
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] in ours]
            for name in names:
                module = name.replace(".", "/") + ".py"
                package = name.replace(".", "/") + "/__init__.py"
                if (ROOT / module).exists() and module not in staged or \
                        (ROOT / package).exists() and package not in staged:
                    missing.append(f"{path} imports {name}")
    assert not missing, missing
