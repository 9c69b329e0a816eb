"""Password logins (``--auth-file``), shared by the binary and text protocols.

The file holds one ``user:password`` per line, as memcached's ``-Y`` file
does; blank lines and lines starting with ``#`` are skipped.  The password
is everything after the first ``:``.

Binary connections log in with SASL PLAIN (``\\0user\\0password``); text
connections the way memcached's text auth does, with a first command
``set <any key> <flags> <exptime> <bytes>`` whose data is ``user password``.

Checks take the same time whatever the input: every entry is compared, user
and password alike, with :func:`hmac.compare_digest`, so a wrong user and a
wrong password look the same to a client, also by their timing.
"""

from __future__ import annotations

import hmac
from pathlib import Path

MECHANISMS = b"PLAIN"


class AuthFileError(ValueError):
    """The auth file cannot be used (unreadable, or a line without ``:``)."""


class Authenticator:
    """The users of an auth file and their passwords."""

    def __init__(self, entries: list[tuple[bytes, bytes]]) -> None:
        if not entries:
            raise AuthFileError("no user:password line")
        self._entries = entries

    @classmethod
    def from_file(cls, path: Path) -> Authenticator:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise AuthFileError(f"{path}: {exc.strerror}") from exc
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip(b"\r")
            if not line.strip() or line.startswith(b"#"):
                continue
            user, colon, password = line.partition(b":")
            if not colon or not user:
                raise AuthFileError(f"{path}:{number}: expected user:password")
            entries.append((user, password))
        return cls(entries)

    def check(self, user: bytes, password: bytes) -> bool:
        """Whether ``user`` has ``password``, in time independent of both."""
        found = False
        for known_user, known_password in self._entries:
            # Both comparisons always run and their results combine without
            # short-circuiting: no timing tells a wrong user from a wrong password.
            same_user = hmac.compare_digest(known_user, user)
            same_password = hmac.compare_digest(known_password, password)
            found |= same_user & same_password
        return found

    def check_plain(self, message: bytes) -> bool:
        """A SASL PLAIN message (RFC 4616): ``[authzid] \\0 user \\0 password``.

        An authorization identity other than the user itself is refused.
        """
        parts = message.split(b"\0")
        if len(parts) != 3:
            return False
        authzid, user, password = parts
        ok = self.check(user, password)
        return ok and authzid in (b"", user)

    def check_text(self, data: bytes) -> bool | None:
        """memcached's text auth: the data of the ``set`` is ``user password``.

        None when the data is not two space-separated tokens (memcached:
        ``CLIENT_ERROR bad authentication token format``).
        """
        tokens = [token for token in data.split(b" ") if token]  # memcached splits on spaces
        if len(tokens) < 2:
            return None
        return self.check(tokens[0], tokens[1])
