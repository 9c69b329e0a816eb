"""Front ends: the text, meta and binary protocols mapped onto the core.

Each handler turns the sans-IO ``protocol`` package's commands into core
calls and the core's answers into reply bytes. They import ``protocol``, the
core and the engine; never the server's sockets or the tools.
"""
