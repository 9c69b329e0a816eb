"""Front ends: the text, meta and binary protocols mapped onto the core.

Each handler turns the sans-IO ``stig_protocol`` package's commands into core
calls and the core's answers into reply bytes. They import ``stig_protocol``, the
core and the engine; never the server's sockets or the tools.
"""
