"""The server: listeners, connections, transports and TLS (all the trio I/O).

Accepts connections on TCP, TLS or a unix socket, runs each connection's
receive–execute–reply loop over a front end, runs the promoter, tells a
service manager how it is doing (``sd_notify``), and shuts down cleanly. It
may import everything below it (front ends, core, engine, storage,
protocol), never the tools.
"""
