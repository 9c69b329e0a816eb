"""Stig: a durable, transactional key-value database speaking memcached.

``stig.store`` keeps the committed state in LMDB; ``stig.promoter`` is its
one writer (group commit); ``stig.session`` is a connection's point of view;
the ``*_handler`` modules bridge the sans-IO ``protocol`` package to
sessions; ``stig.connection`` and ``stig.server`` are the trio I/O.
"""
