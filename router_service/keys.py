"""Manage API keys: ``python -m router_service.keys add|revoke|list --file KEYS``.

The router reads the same keys file format as the cache service, so this runs
the cache service's key command (see ``cache_service.keys``).
"""

from __future__ import annotations

import sys

from cache_service.keys import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m router_service.keys"))
