"""A command run with its stderr on a real terminal (a pseudo-terminal), for what
it draws there: the bytes it wrote, cut into the lines and in-place redraws a
person would have seen."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Columns of the terminal: wide enough for a whole progress line.
COLUMNS = 200
#: Control sequences: CSI (colours, cursor moves, erasing) and OSC.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


@dataclass
class Terminal:
    """What a process wrote: its stdout (a pipe) and its stderr (the terminal)."""

    returncode: int
    stdout: str
    #: Everything written to the terminal, control sequences included.
    raw: str

    @property
    def frames(self) -> list[str]:
        """Each line or redraw, control sequences removed, without blank ones."""
        text = _CONTROL.sub("", self.raw)
        return [part.strip() for part in re.split(r"[\r\n]", text) if part.strip()]


def run_on_terminal(
    argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> Terminal:
    """Run ``argv`` with stderr on a pseudo-terminal until it exits and the
    terminal is drained; stdout is a pipe, stdin nothing."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
    environment = {**os.environ, "TERM": "xterm-256color", **(env or {})}
    # A width asked of the terminal, not of the environment.
    environment.pop("COLUMNS", None)
    process = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=environment
    )
    os.close(slave)
    assert process.stdout is not None
    written = bytearray()
    out = bytearray()
    deadline = time.monotonic() + timeout
    streams = {master, process.stdout.fileno()}
    try:
        while streams:
            left = deadline - time.monotonic()
            if left <= 0:
                process.kill()
                raise AssertionError(f"{argv} did not end in {timeout} s:\n{written.decode()}")
            ready, _, _ = select.select(list(streams), [], [], left)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    data = b""
                if not data:
                    streams.discard(fd)
                elif fd == master:
                    written += data
                else:
                    out += data
        returncode = process.wait(timeout)
    finally:
        os.close(master)
        process.stdout.close()
    return Terminal(returncode, out.decode(), written.decode())
