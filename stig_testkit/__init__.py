"""Code shared by Stig's tests and its scripts: wire clients, load, checkers.

Tests (``tests/``) and tools (``scripts/``) both import from here, so neither
edits ``sys.path`` to reach the other. It is installed with Stig (it is small
and imports only ``protocol``, ``stig`` and the standard library) but is never
imported by ``stig`` or ``protocol``: the layout test keeps it so.
"""
