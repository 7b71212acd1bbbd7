"""The project's one error root: what a user can act on is an ApplianceError, with a hint.

The command lines (`python -m builder`, `python -m lab`) catch only this and print its message
in one line and its hint in a second; anything else is a bug and keeps its traceback.

    ApplianceError                 message, hint
    ├── ProfileError               builder.profile: every problem of a profile, each naming its key
    ├── SecretError                builder.secret: the heartbeat secret is missing, unsafe or weak
    ├── HostError                  builder.host: host tools missing and not installable here
    ├── CommandError               builder.run: a command exited non-zero (argv, exit, stderr)
    ├── SeedError                  firstboot.configure: the seed is missing or unusable
    └── LabError                   lab: booting or driving VMs
        ├── ImageMissing           lab.paths: a built image is not there
        ├── UpError                lab.up: `up`/`down` state
        ├── QemuError              lab.machine: QEMU would not start, or QMP refused a command
        │                          (the qemu.qmp error is kept as __cause__)
        ├── GuestAgentError        lab.agent: the guest agent does not answer
        ├── BrowseError            lab.client: chromium printed no page (an AssertionError too)
        ├── NoSuchNic              lab.machine: a NIC number the machine does not have
        ├── CommandFailed          lab.machine: a guest command's exit status (an AssertionError
        │   │                      too, so a test shows it as a failed check); retried in a wait
        │   └── BootFailed         the console's problem line; also wait.Abort: never retried
        ├── Timeout                lab.wait: what was awaited did not come (AssertionError too)
        └── Abort                  lab.wait: a check says what it waits for can no longer come
"""
from __future__ import annotations


class ApplianceError(Exception):
    """An error the user can act on. `hint` says how, when the message alone does not."""

    hint: str = ""

    def __init__(self, *args: object, hint: str = ""):
        super().__init__(*args)
        if hint:
            self.hint = hint


class LabError(ApplianceError):
    """Booting or driving the lab's machines went wrong."""
