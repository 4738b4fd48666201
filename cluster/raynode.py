#!/usr/bin/env python3
"""`ray start` for a *worker* node that stays on loopback: `python raynode.py start --block ...`.

Why this exists (Ray 2.60, checked in `ray/scripts/scripts.py` and `ray/_private/services.py`):
a worker node can only join while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is true (the Linux default),
but with that setting `ray start` rewrites `--node-ip-address 127.0.0.1` and `--address
127.0.0.1:PORT` to the primary interface's address (`resolve_ip_for_localhost`). The head, started
with the knob at 0, listens on 127.0.0.1 only, so the rewritten worker can neither reach it nor
stay on loopback. This wrapper runs Ray's own CLI unchanged except that 127.x.x.x addresses are
kept as given. Every other address goes through Ray's resolution as before.
Re-check on a Ray upgrade (tests/test_cluster_local.py asserts the binding).
"""

from __future__ import annotations

import sys

import ray._private.services as services

_resolve = services.resolve_ip_for_localhost


def _keep_loopback(host: str) -> str:
    """Keep IPv4 loopback addresses; defer everything else to Ray."""
    return host if host.startswith("127.") else _resolve(host)


services.resolve_ip_for_localhost = _keep_loopback

if __name__ == "__main__":
    from ray.scripts.scripts import main

    sys.argv = ["ray", *sys.argv[1:]]
    sys.exit(main())
