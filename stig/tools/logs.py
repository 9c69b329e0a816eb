"""The server's log lines: for a terminal or a file, or for the systemd journal.

On a terminal, in a file or under any supervisor but systemd, each line is
``TIME LEVEL LOGGER: message``, as always.

When stderr is connected to the journal, the journal stamps every line
itself, with the unit, the pid and the time: a timestamp of ours would show
twice in ``journalctl``.  So there each line is ``<P>LEVEL LOGGER: message``,
where ``<P>`` is the syslog priority (``<7>`` debug, ``<6>`` info, ``<4>``
warning, ``<3>`` error, ``<2>`` critical) that journald takes off the line
and keeps as the entry's priority (``journalctl -p warning`` filters on it;
``SyslogLevelPrefix=`` in systemd.exec(5)).  Every line of a multi-line
message — a traceback — carries the prefix, since the journal makes each
line an entry of its own.

"Connected to the journal" is what systemd documents for it
(systemd.exec(5), ``$JOURNAL_STREAM``): the variable holds the device and
inode numbers (``DEV:INODE``) of the stream systemd connected, and they
match stderr's own; a child whose stderr was redirected elsewhere inherits
the variable but not the match.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TextIO

#: Today's format, for everything but the journal.
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The journal's: no time (it stamps its own); the priority prefix is added per line.
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (sd-daemon(3)'s ``SD_*`` prefixes)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """No timestamp; ``<P>`` in front of every line of the record."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def goes_to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream ``$JOURNAL_STREAM`` names."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False  # no variable, a malformed one, or a stream without a descriptor


def configure(level: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> None:
    """Log at ``level`` and above to ``stream``, formatted for where it goes."""
    handler = logging.StreamHandler(stream)
    if goes_to_journal(stream, environ):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
