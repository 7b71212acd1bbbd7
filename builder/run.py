"""The one way this project runs an external command: logged, checked, explained."""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from builder.errors import ApplianceError

log = logging.getLogger("builder.run")


@dataclass
class CommandError(ApplianceError):
    """A command exited non-zero; carries the command line and what it printed on stderr."""

    argv: list[str]
    returncode: int
    stderr: str

    def __str__(self) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-20:])
        return f"command failed (exit {self.returncode}): {shlex.join(self.argv)}\n{tail}"


Arg = str | os.PathLike[str] | int  # paths and numbers become words as str() writes them


def run(argv: Sequence[Arg], *, check: bool = True, capture: bool = True, input: str | None = None,
        timeout: float | None = None, env: dict[str, str] | None = None, cwd: str | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell), log it, and raise CommandError on failure.

    With capture=False stdout/stderr go to the terminal (long steps show progress) and
    the error carries no stderr text.
    """
    words = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
    log.info("$ %s", shlex.join(words))
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.run(words, stdout=pipe, stderr=pipe, input=input, text=True,
                          timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise CommandError(words, proc.returncode, proc.stderr or "")
    return proc
