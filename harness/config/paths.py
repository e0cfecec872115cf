"""Where the project's own files are: the repository root, the Hydra config tree, the papers' published tables."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
REFERENCE_DIR = REPO_ROOT / "results" / "reference"
