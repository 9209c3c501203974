"""Files a nightly job leaves for a later run: one a camera may still be writing (left alone until it has not changed
for a while), and one that went away while the run went on (an archive's retention, a person moving it)."""

from __future__ import annotations

import os


def unsettled(age_s: float | None, settle_s: float) -> str | None:
    """Why a file last modified `age_s` seconds ago (None: unknown) is left for the next run, or None to go on (always
    with `settle_s` 0: nothing is waited for)."""
    if settle_s <= 0 or age_s is None or age_s >= settle_s:
        return None
    if age_s < 0:
        return (f"its modification time is {-age_s:.0f}s in the future (a clock ahead of this machine's?): left until "
                f"it is {settle_s:g}s in the past")
    return f"modified {age_s:.0f}s ago (less than --settle-s {settle_s:g}): left for the next run"


def gone_since_listed(source: str, reason: str | None, done_by: str) -> str | None:
    """Why a video that failed with `reason` is left for a later run instead, because its file `source` no longer
    exists (no person needs to fix that; it is done `done_by` a later run if it comes back); None when the file is
    still there and the failure stands."""
    if os.path.lexists(source):
        return None
    return f"deleted or moved while the run went on ({reason}): {done_by} by a later run if it comes back"
