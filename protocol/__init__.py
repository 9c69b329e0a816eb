"""Stig's sans-IO memcached protocols: bytes in, commands out; replies to bytes.

Nothing here imports trio, lmdb or stig.  ``text`` holds the text parser
(classic and meta commands), ``text_replies`` its replies, ``meta`` the meta
commands, ``binary`` the binary protocol.
"""

from protocol.errors import ErrorKind, InvalidCommand, ProtocolError
from protocol.limits import Limits

__all__ = ["ErrorKind", "InvalidCommand", "Limits", "ProtocolError"]
