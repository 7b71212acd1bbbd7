"""One error root (builder/errors.py): every error a user can act on is an ApplianceError, and
the command lines print it as a message and a hint, never as a traceback."""
from __future__ import annotations

import importlib
import inspect

import pytest

from builder import cli
from builder.errors import ApplianceError
from lab import wait
from tests.conftest import ROOT

MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                 for d in ("builder", "firstboot", "lab") for p in (ROOT / d).glob("*.py")
                 if p.stem not in ("__main__", "ipvs_eintr"))


def test_every_error_class_of_the_project_has_the_one_root():
    found = []
    for name in MODULES:
        for cls_name, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__ == name:
                found.append(cls)
                assert issubclass(cls, ApplianceError), f"{name}.{cls_name} is not an ApplianceError"
    assert len(found) >= 10  # the hierarchy in builder/errors.py's docstring


def test_the_cli_prints_the_message_and_the_hint_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nvip = "10.0.0.300"\n')
    assert cli.main(["lint", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "vip" in err and "Traceback" not in err
    assert "\nhint: `python -m builder reference` lists every key" in err


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch):
    monkeypatch.setattr(cli.profile, "load", lambda path: {}["boom"])
    with pytest.raises(KeyError):
        cli.main(["lint", "profiles/howto.toml"])


def test_a_programming_error_in_a_check_is_raised_at_once_not_after_the_timeout():
    calls = []

    def check():
        calls.append(1)
        return undefined_name  # noqa: F821 - the typo under test

    with pytest.raises(NameError):
        wait.until(check, 30, "a typo", interval=0.01)
    assert len(calls) == 1


def test_the_hint_is_kept_per_instance_and_defaults_to_none():
    assert ApplianceError("x").hint == "" and ApplianceError("x", hint="do y").hint == "do y"
    assert str(ApplianceError("x", hint="do y")) == "x"
