"""Certificates for the stack's TLS listeners, made once with `openssl` and cached.

One private CA signs the broker's certificate (for 127.0.0.1 and localhost) and a client
certificate for mutual TLS. The broker reads a PKCS12 keystore and trusts the CA's PEM;
the Python client reads PEM files only, which is why `openssl` makes them all (`keytool`
cannot write a private key as PEM). The client key is encrypted, so the key-password
setting is exercised too. Passwords are random and live beside the files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from stream.devkit.stack.process import file_lock, run_tool
from stream.errors import StackError

__all__ = ["Certificates", "certificates"]

# Dev certificates: long-lived, so a cache is never found expired.
_DAYS = "3650"
_KEY = "rsa:2048"


@dataclass(frozen=True)
class Certificates:
    """Paths and passwords of the cached certificates."""

    ca_pem: Path
    keystore: Path  # the broker's key and certificate chain, PKCS12
    keystore_password: str = field(repr=False)
    client_pem: Path
    client_key: Path  # encrypted PKCS8 PEM
    client_key_password: str = field(repr=False)


def certificates(cache_dir: Path) -> Certificates:
    """The cached certificates, made on first use; StackError when `openssl` is missing."""
    home = cache_dir / "tls"
    marker = home / "secrets.json"
    if not marker.exists():
        with file_lock(cache_dir / "tls.lock"):
            if not marker.exists():  # nobody made them while we waited
                _make(home)
    passwords = json.loads(marker.read_text())
    return Certificates(
        ca_pem=home / "ca.pem",
        keystore=home / "broker.p12",
        keystore_password=passwords["keystore"],
        client_pem=home / "client.pem",
        client_key=home / "client.key",
        client_key_password=passwords["client_key"],
    )


def _make(home: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise StackError("openssl not found: `stream stack up --secure` makes its certificates "
                         "with it (e.g. `apt-get install openssl`)")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    passwords = {"keystore": secrets.token_hex(12), "client_key": secrets.token_hex(12)}
    # Passwords reach openssl through its environment, not its argv (visible in `ps`).
    env = dict(os.environ, KEYSTORE_PASSWORD=passwords["keystore"],
               CLIENT_KEY_PASSWORD=passwords["client_key"])

    def run(*args: str, what: str) -> None:
        run_tool([openssl, *args], cwd=home, env=env, what=what)

    run("req", "-x509", "-newkey", _KEY, "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", _DAYS, "-subj", "/CN=stream dev CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", what="making the dev CA")
    for name, subject, usage, key_options in (
        ("broker", "/CN=localhost", "serverAuth", ["-nodes"]),
        ("client", "/CN=stream", "clientAuth", ["-passout", "env:CLIENT_KEY_PASSWORD"]),
    ):
        (home / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
        run("req", "-newkey", _KEY, *key_options, "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", subject, what=f"making the {name} key")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", str(secrets.randbits(63)), "-days", _DAYS, "-extfile",
            f"{name}.ext", "-out", f"{name}.pem", what=f"signing the {name} certificate")
    run("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "broker", "-out", "broker.p12", "-passout", "env:KEYSTORE_PASSWORD",
        what="writing the broker keystore")
    for leftover in ("ca.key", "broker.key", "broker.csr", "client.csr", "broker.ext",
                     "client.ext"):
        (home / leftover).unlink()
    secrets_file = home / "secrets.json"
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(json.dumps(passwords))  # written last: it marks the set complete
