"""Tools: the ``stig`` command line and the offline operations on a data directory.

``cli`` is the top of the house (``stig serve`` starts the server, its log
lines formatted by ``logs``: plain, or for the systemd journal);
``envtools`` (backup, restore, check), ``transfer`` and ``dumpfmt`` (dump and
load as meta commands), ``movekeys`` and ``ring`` (adding a node to a ring of
Stig nodes) and ``progress`` work on a data directory or over the wire, never
inside a running server. Nothing else in ``stig`` imports them.
"""
