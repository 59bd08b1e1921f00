"""Transport security and access control for both services: TLS / mutual TLS, bearer tokens.

Health checks stay open (load balancers and kubelets probe without credentials); every other
RPC needs the access token when one is configured; write RPCs can additionally need an admin
token, or be switched off.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from imgsearch.errors import ImgsearchError

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
# RPCs that change the index or its processing; read-only RPCs are everything else.
WRITE_METHODS = frozenset({"/imgsearch.v1.Embedder/Rescan"})


class SecurityConfigError(ImgsearchError):
    """TLS files missing or inconsistent."""


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    token: str | None = None
    admin_token: str | None = None
    write_rpcs: bool = True

    def check(self, method: str, metadata: dict[str, str]) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may proceed, else the status to refuse it with.

        The admin token also grants everything the access token does.
        """
        if method.startswith(HEALTH_PREFIX):
            return None
        presented = _bearer(metadata.get("authorization", ""))
        is_admin = self.admin_token is not None and _same(presented, self.admin_token)
        if method in WRITE_METHODS:
            if not self.write_rpcs:
                return grpc.StatusCode.PERMISSION_DENIED, "write RPCs are disabled on this server"
            needed = self.admin_token or self.token
            if needed is not None and not _same(presented, needed):
                if presented is None:
                    return grpc.StatusCode.UNAUTHENTICATED, "this RPC needs a bearer token"
                return grpc.StatusCode.PERMISSION_DENIED, "this RPC needs the admin token"
            return None
        if self.token is not None and not (_same(presented, self.token) or is_admin):
            return grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token"
        return None


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _same(presented: str | None, expected: str) -> bool:
    # Constant-time: no timing side channel on the token.
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed (mTLS)

    def server_credentials(self) -> grpc.ServerCredentials:
        try:
            pair = (self.key.read_bytes(), self.cert.read_bytes())
            client_ca = self.client_ca.read_bytes() if self.client_ca else None
        except OSError as exc:
            raise SecurityConfigError(f"cannot read TLS file: {exc}") from exc
        return grpc.ssl_server_credentials(
            [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
        )


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Client side: trust `ca` (system roots when None), present cert/key for mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
