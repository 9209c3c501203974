"""Names for runs, sweeps and scoring runs: sortable by start time and unique across machines and retries."""

from __future__ import annotations

import time
import uuid


def new_run_name(kind: str) -> str:
    """`<kind>-YYYYmmdd-HHMMSS-<6 hex>`, e.g. `memae-20261130-021500-3f9a1c`."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
