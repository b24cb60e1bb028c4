"""TLS for a local topology: a throw-away CA and certificates, and how to use them.

``make_certificates`` runs the ``openssl`` command line (no Python dependency) to make, in a
directory of the run directory: a CA, one server certificate for every node (SAN ``127.0.0.1``,
``::1``, ``localhost`` and the topology's host; usable as a client certificate too, since
replicas and Sentinels present it when they connect to other nodes) and a client certificate
for applications. Keys are EC P-256: making all of them takes a fraction of a second.

Invariants kept here: certificates are made once per run directory and reused on restart (a
restarted node must present what its peers already trust); private keys are readable by their
owner only; nothing here is meant for production use (the CA's key sits next to its certificate).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacache.topology.node import TopologyError

DAYS = 30


@dataclass(frozen=True)
class Certificates:
    """Absolute paths of the files ``make_certificates`` writes into ``dir``."""

    dir: str

    def _path(self, name: str) -> str:
        return str(Path(self.dir) / name)

    @property
    def ca(self) -> str:
        return self._path("ca.crt")

    @property
    def ca_key(self) -> str:
        return self._path("ca.key")

    @property
    def server_cert(self) -> str:
        return self._path("server.crt")

    @property
    def server_key(self) -> str:
        return self._path("server.key")

    @property
    def client_cert(self) -> str:
        return self._path("client.crt")

    @property
    def client_key(self) -> str:
        return self._path("client.key")

    def exist(self) -> bool:
        names = (self.ca, self.server_cert, self.server_key, self.client_cert, self.client_key)
        return all(Path(p).is_file() for p in names)

    def client_params(self) -> dict[str, str]:
        """redis-py's TLS arguments for an application: trust the CA, present the client
        certificate (the ``ssl_*`` query parameters of a ``rediss://`` URL)."""
        return {
            "ssl_ca_certs": self.ca,
            "ssl_certfile": self.client_cert,
            "ssl_keyfile": self.client_key,
        }

    def probe_kwargs(self) -> dict[str, Any]:
        """``redis.Redis`` arguments for the launcher's own probes."""
        return {"ssl": True, **self.client_params()}


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode != 0:
        raise TopologyError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _sans(host: str) -> str:
    names = {"IP:127.0.0.1", "IP:::1", "DNS:localhost"}
    try:
        ipaddress.ip_address(host)
        names.add(f"IP:{host}")
    except ValueError:
        names.add(f"DNS:{host}")
    return ",".join(sorted(names))


def _key_and_csr(name: str, subject: str, cwd: Path) -> None:
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd,
    )  # fmt: skip


def _sign(name: str, extensions: str, cwd: Path) -> None:
    (cwd / f"{name}.ext").write_text(extensions + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", str(DAYS),
        "-extfile", f"{name}.ext", cwd=cwd,
    )  # fmt: skip


def make_certificates(directory: str | os.PathLike[str], host: str = "127.0.0.1") -> Certificates:
    """A CA, a server and a client certificate in ``directory`` (kept if already there)."""
    certs = Certificates(str(Path(directory).resolve()))
    if certs.exist():
        return certs
    if shutil.which("openssl") is None:
        raise TopologyError("TLS needs the openssl command line: apt-get install -y openssl")
    cwd = Path(certs.dir)
    cwd.mkdir(parents=True, exist_ok=True)
    os.chmod(cwd, 0o700)
    _openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", str(DAYS), "-subj", "/CN=hacache test CA", cwd=cwd,
    )  # fmt: skip
    _key_and_csr("server", "/CN=hacache test server", cwd)
    _sign("server", f"subjectAltName={_sans(host)}\nextendedKeyUsage=serverAuth,clientAuth", cwd)
    _key_and_csr("client", "/CN=hacache test client", cwd)
    _sign("client", "extendedKeyUsage=clientAuth", cwd)
    for leftover in ("server.csr", "client.csr", "server.ext", "client.ext", "ca.srl"):
        (cwd / leftover).unlink(missing_ok=True)
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        os.chmod(key, 0o600)
    return certs
