"""Ports and HTTP probes on the bind host (loopback unless told otherwise)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could bind `port` on `host` now."""
    with socket.socket() as sock:
        # as the servers themselves bind: a port whose old connections sit in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url` (with a bearer token if given); (status, body), status 0 if unreachable."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback URL)
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def url_host(host: str) -> str:
    """Host as it goes into a URL (0.0.0.0 is reached through loopback locally)."""
    return LOOPBACK if host in ("0.0.0.0", "") else host
