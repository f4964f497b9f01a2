"""Where a relative path in a job's configuration points: a site's workspace root, or a given folder.

Shared by the executors (data, base model folders), the streaming receivers (where pushed models land)
and the server (run-folder paths), so every component reads a path the same way.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the round loop and checkpoints import this module without FLARE
    from nvflare.apis.fl_context import FLContext


def resolve_under(base, path: str) -> Path:
    """``path`` with ``~`` and ``$VARS`` expanded; absolute as given, relative under ``base``."""
    path = Path(os.path.expandvars(os.path.expanduser(path)))
    return path if path.is_absolute() else Path(base) / path


def resolve_site_dir(path: str, fl_ctx: "FLContext") -> Path:
    """``{site_name}`` replaced by this site's name; absolute paths as given; relative ones under this site's
    workspace root (not the job's run folder)."""
    path = path.replace("{site_name}", fl_ctx.get_identity_name() or "")
    return resolve_under(fl_ctx.get_engine().get_workspace().get_root_dir(), path)
