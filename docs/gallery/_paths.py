"""Where the repository's examples are, from wherever the gallery runs."""

from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "examples" / "cuba.toml").is_file())
EXAMPLES = ROOT / "examples"
