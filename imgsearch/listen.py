"""Checks that an address can be served on before a server binds it, naming it if not.

gRPC binds with SO_REUSEPORT by default, so a second server on a taken port starts and the
kernel splits the clients between the two; our servers turn that off, and this check turns
a refused bind into an error that names the address (gRPC's own says "Failed to bind").
"""

from __future__ import annotations

import errno
import socket

from imgsearch.errors import ListenError

_HINTS = {
    errno.EADDRINUSE: "the address is in use (another imgsearch serve?)",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's",
    errno.EACCES: "ports below 1024 need privileges",
}


def ensure_available(listen: str, *, what: str, flag: str) -> None:
    """Raise ListenError unless HOST:PORT can be bound now (port 0 always can); the message
    says to choose another address with `flag`."""
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen for {what} on {listen}: {exc.strerror}; choose another with {flag}"
        ) from exc
    for family, kind, protocol, _, address in found:
        with socket.socket(family, kind, protocol) as probe:
            # As servers do: a port whose last connection is in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                hint = _HINTS.get(exc.errno or 0, exc.strerror or str(exc))
                raise ListenError(
                    f"cannot listen for {what} on {listen}: {hint}; choose another with {flag}"
                ) from exc
