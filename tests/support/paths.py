"""Where things are, for tests anywhere under tests/."""

from pathlib import Path

#: The repository's root.
REPO_ROOT = Path(__file__).resolve().parents[2]
