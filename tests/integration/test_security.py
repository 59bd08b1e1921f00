"""Issue 7: TLS, mutual TLS, bearer tokens and write-RPC control on a real server."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from imgsearch.rpc.client import Client
from tests.conftest import Served
from tests.processes import status_code

Key = ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str, key: Key, issuer: tuple[x509.Name, Key] | None, *, ca: bool = False
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    files: dict[str, Path] = {}
    for ca_name in ("ca", "rogue-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate(ca_name, ca_key, None, ca=True)
        files[f"{ca_name}.crt"], _ = _write(folder, ca_name, ca_cert, ca_key)
        for leaf in ("server", "client") if ca_name == "ca" else ("client",):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(leaf, key, (ca_cert.subject, ca_key))
            prefix = leaf if ca_name == "ca" else f"rogue-{leaf}"
            files[f"{prefix}.crt"], files[f"{prefix}.key"] = _write(folder, prefix, cert, key)
    return files


def _works(client: Client, photo: Path) -> bool:
    try:
        return bool(client.search(photo.read_bytes(), limit=1).matches)
    except grpc.RpcError:
        return False


def test_tls(pki: dict[str, Path], photo_folder: Path, serve: Callable[..., Served]) -> None:
    served = serve(photo_folder, tls_cert=pki["server.crt"], tls_key=pki["server.key"])
    served.client.close()
    target = f"127.0.0.1:{served.app.port}"
    served.client = Client(target, tls_ca=pki["ca.crt"])
    served.wait_idle()
    photo = next(photo_folder.iterdir())
    assert _works(served.client, photo)
    with Client(target, timeout=3) as plaintext:
        assert not _works(plaintext, photo)
    with Client(target, timeout=3, tls_ca=pki["rogue-ca.crt"]) as wrong_trust:
        assert not _works(wrong_trust, photo)


def test_mutual_tls(pki: dict[str, Path], photo_folder: Path, serve: Callable[..., Served]) -> None:
    served = serve(
        photo_folder,
        tls_cert=pki["server.crt"],
        tls_key=pki["server.key"],
        tls_client_ca=pki["ca.crt"],
    )
    served.client.close()
    target = f"127.0.0.1:{served.app.port}"
    served.client = Client(
        target, tls_ca=pki["ca.crt"], tls_cert=pki["client.crt"], tls_key=pki["client.key"]
    )
    served.wait_idle()
    photo = next(photo_folder.iterdir())
    assert _works(served.client, photo)
    with Client(target, timeout=3, tls_ca=pki["ca.crt"]) as no_certificate:
        assert not _works(no_certificate, photo)
    with Client(
        target,
        timeout=3,
        tls_ca=pki["ca.crt"],
        tls_cert=pki["rogue-client.crt"],
        tls_key=pki["rogue-client.key"],
    ) as rogue:
        assert not _works(rogue, photo)


def test_tokens_and_write_rpcs(photo_folder: Path, serve: Callable[..., Served]) -> None:
    served = serve(
        photo_folder, auth_token=SecretStr("reader-secret"), admin_token=SecretStr("admin-secret")
    )
    target = f"127.0.0.1:{served.app.port}"
    served.client.close()
    served.client = Client(target, token="reader-secret")
    served.wait_idle()
    photo = next(photo_folder.iterdir()).read_bytes()
    with (
        Client(target) as anonymous,
        Client(target, token="wrong") as wrong,
        Client(target, token="admin-secret") as admin,
    ):
        reader = served.client
        assert status_code(lambda: anonymous.search(photo)) == grpc.StatusCode.UNAUTHENTICATED
        assert status_code(anonymous.status) == grpc.StatusCode.UNAUTHENTICATED
        assert status_code(lambda: wrong.search(photo)) == grpc.StatusCode.UNAUTHENTICATED
        assert status_code(lambda: reader.search(photo)) == grpc.StatusCode.OK
        assert status_code(lambda: admin.search(photo)) == grpc.StatusCode.OK
        assert status_code(reader.rescan) == grpc.StatusCode.PERMISSION_DENIED
        assert status_code(anonymous.rescan) == grpc.StatusCode.UNAUTHENTICATED
        assert status_code(admin.rescan) == grpc.StatusCode.OK
    # health stays open for probes
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_write_rpcs_can_be_disabled(photo_folder: Path, serve: Callable[..., Served]) -> None:
    served = serve(photo_folder, write_rpcs=False)
    served.wait_idle()
    assert status_code(served.client.rescan) == grpc.StatusCode.PERMISSION_DENIED
    assert status_code(served.client.status) == grpc.StatusCode.OK


def test_http_api_has_the_same_tls_and_client_certificates(
    pki: dict[str, Path], photo_folder: Path, serve: Callable[..., Served]
) -> None:
    """Issue 17: the HTTP port is served with gRPC's TLS settings, mutual TLS included."""
    served = serve(
        photo_folder,
        http_listen="127.0.0.1:0",
        tls_cert=pki["server.crt"],
        tls_key=pki["server.key"],
        tls_client_ca=pki["ca.crt"],
    )
    served.client.close()
    served.client = Client(
        f"127.0.0.1:{served.app.port}",
        tls_ca=pki["ca.crt"],
        tls_cert=pki["client.crt"],
        tls_key=pki["client.key"],
    )
    served.wait_idle()
    url = f"https://127.0.0.1:{served.app.http_port}/v1/status"
    trusted = ssl.create_default_context(cafile=pki["ca.crt"])
    trusted.load_cert_chain(pki["client.crt"], pki["client.key"])
    response = httpx.get(url, verify=trusted, timeout=10)
    assert response.status_code == 200
    assert response.json()["indexed"] == served.client.status().indexed
    no_certificate = ssl.create_default_context(cafile=pki["ca.crt"])
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(url, verify=no_certificate, timeout=10).raise_for_status()
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://"), timeout=10).raise_for_status()
