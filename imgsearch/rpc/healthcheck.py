"""`python -m imgsearch.rpc.healthcheck [HOST:PORT]`: exit 0 when the health check says SERVING.

The container HEALTHCHECK (no grpc_health_probe binary in the image). Without an address it
checks 127.0.0.1 on the port of IMGSEARCH_LISTEN (default 50051). Imports only grpc, so a
check costs a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 50051


def default_address() -> str:
    listen = os.environ.get("IMGSEARCH_LISTEN", "")
    _, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port if port.isdigit() else DEFAULT_PORT}"


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """The serving status of `service` ("" = the whole server), or the gRPC error code name."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgsearch.rpc.healthcheck", description=__doc__
    )
    parser.add_argument("address", nargs="?", default=default_address(), metavar="HOST:PORT")
    parser.add_argument("--service", default="", help="e.g. imgsearch.v1.Searcher ('' = server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    args = parser.parse_args(argv)
    status = check(args.address, args.service, args.timeout)
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
