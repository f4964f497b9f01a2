"""Site component policy: let a site build flaretune's components from the installed package.

NVFlare 2.9 builds a job component only if its class path matches a prefix in the site's
``class_allow_list`` (``local/resources.json``; NVFlare's own default list when absent). Our jobs
carry no ``custom/`` code, so sites need no BYOC right — but each site admin must allow the
``flaretune.`` prefix once. This module writes that policy into a simulator workspace, a POC
workspace or a startup kit, keeping every entry already there.
"""

import json
from pathlib import Path
from typing import Iterable, List

ALLOW_PREFIX = "flaretune."
CLASS_ALLOW_LIST = "class_allow_list"
RESOURCES = "resources.json"
DEFAULT_RESOURCES = "resources.json.default"


def _default_allow_list() -> List[str]:
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    return list(DEFAULT_CLASS_ALLOW_LIST)


def allow_in_file(source: Path, target: Path, prefixes: Iterable[str] = (ALLOW_PREFIX,)) -> Path:
    """Write ``source`` (a site resources file; FLARE's defaults when it is missing) to ``target`` with
    ``prefixes`` added to its allow list; a missing list means FLARE's default list, which is kept."""
    resources = json.loads(source.read_text()) if source.exists() else {"format_version": 2}
    if not isinstance(resources, dict):
        raise ValueError(f"{source}: a site resources file must hold a JSON object")
    allow = resources.get(CLASS_ALLOW_LIST)
    if allow is None:
        allow = _default_allow_list()
    for prefix in prefixes:
        if "*" not in allow and prefix not in allow:
            allow.append(prefix)
    resources[CLASS_ALLOW_LIST] = allow
    target.write_text(json.dumps(resources, indent=2) + "\n")
    return target


def allow_in_local_dir(local_dir, prefixes: Iterable[str] = (ALLOW_PREFIX,)) -> Path:
    """Add ``prefixes`` to the allow list of one site's ``local/`` folder; return the file written."""
    local = Path(local_dir)
    local.mkdir(parents=True, exist_ok=True)
    target = local / RESOURCES
    return allow_in_file(target if target.exists() else local / DEFAULT_RESOURCES, target, prefixes)


def allow_in_workspace(workspace, prefixes: Iterable[str] = (ALLOW_PREFIX,)) -> List[Path]:
    """Apply the policy to every site under ``workspace``.

    * a simulator workspace (or any folder with no sites yet): ``workspace/local``;
    * a POC workspace or a folder of startup kits: each ``<site>/local`` that exists.
    """
    root = Path(workspace)
    site_locals = sorted(p for p in root.glob("*/local") if (p.parent / "startup").is_dir())
    if not site_locals:
        site_locals = sorted(p for p in root.glob("**/local") if (p.parent / "startup").is_dir())
    if (root / "startup").is_dir() or not site_locals:
        site_locals = [root / "local"] + site_locals
    return [allow_in_local_dir(local, prefixes) for local in site_locals]
