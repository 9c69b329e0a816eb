"""The command core: what every read and write command does, once for all protocols.

The text, meta and binary front ends translate wire commands into calls on
:class:`~stig.core.command_core.Core`, which applies Stig's transaction rules
to a session (when a run closes, when a read must wait for a commit, which
writes answer after their commit); a connection's replies (``replies``: the
buffer, its limit, when replies may leave, every send and ``bytes_written``)
and those held behind their commits (``reply_gate``). Also the ``stats``
listings and the key listings. It imports the engine, storage and
``stig_protocol``'s listing format, never a front end, the server or the tools.
"""
