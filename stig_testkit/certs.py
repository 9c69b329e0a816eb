"""Certificates for TLS runs, made with the ``openssl`` command (Debian's ``openssl``)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_cert(directory: Path) -> None:
    """``cert.pem`` and ``key.pem`` in ``directory``: a self-signed certificate
    for 127.0.0.1, valid one day (benchmarks and tests)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    )
