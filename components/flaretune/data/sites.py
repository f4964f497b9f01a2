"""Site naming shared by generators, splits and job configs: index 0 is ``site-1``."""

import re

_SITE_NAME = re.compile(r"^site-([1-9][0-9]*)$")


def site_name(site_index: int) -> str:
    """``0 -> "site-1"``: FLARE client names are 1-based, our indices 0-based."""
    if site_index < 0:
        raise ValueError(f"site_index must be >= 0, got {site_index}")
    return f"site-{site_index + 1}"


def site_index_from_name(name: str) -> int:
    """``"site-2" -> 1``; raises ValueError for a name that is not ``site-N`` with N >= 1."""
    match = _SITE_NAME.match(name)
    if not match:
        raise ValueError(f"invalid site name {name!r}: expected 'site-N' with N >= 1, e.g. 'site-1'")
    return int(match.group(1)) - 1
