"""Files a camera may still be writing: both nightly jobs leave a file alone until it has not changed for a while."""

from __future__ import annotations


def unsettled(age_s: float | None, settle_s: float) -> str | None:
    """Why a file last modified `age_s` seconds ago (None: unknown) is left for the next run, or None to go on (always
    with `settle_s` 0: nothing is waited for)."""
    if settle_s <= 0 or age_s is None or age_s >= settle_s:
        return None
    if age_s < 0:
        return (f"its modification time is {-age_s:.0f}s in the future (a clock ahead of this machine's?): left until "
                f"it is {settle_s:g}s in the past")
    return f"modified {age_s:.0f}s ago (less than --settle-s {settle_s:g}): left for the next run"
