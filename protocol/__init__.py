"""Stig's sans-IO memcached protocols: bytes in, commands out; replies to bytes.

The folder is protocol/; the package is ``stig_protocol``, installed under
that name and imported by it everywhere (a clone has the link
``stig_protocol -> protocol``): README, "Layout".

Nothing here imports trio, lmdb or stig (tests/protocol/test_layout.py
checks it, and that no module imports another in a cycle).

* text protocol: ``text`` (the parser) built from ``text_framing`` (lines
  and data blocks), ``text_commands`` (one line to a command) and
  ``text_fast`` (the same commands, faster, for the commonest lines);
  ``commands`` its commands, ``text_replies`` its replies;
* meta commands: ``meta`` (re-exports ``meta_commands``, ``meta_reader``,
  ``meta_responses``, ``meta_writer``);
* binary protocol: ``binary`` (the parser; re-exports ``binary_codes``,
  ``binary_events`` and ``binary_writer``, which formats every reply).

Events are immutable values; writers turn them into bytes, never the events
themselves (``InvalidCommand.text_reply`` aside, a one-line error hint).
"""

from stig_protocol.errors import ErrorKind, InvalidCommand, ProtocolError
from stig_protocol.limits import Limits

__all__ = ["ErrorKind", "InvalidCommand", "Limits", "ProtocolError"]
