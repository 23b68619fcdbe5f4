"""Where a run's code came from: the git commit logged with every training run."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(cwd: Path | None = None) -> str:
    """The git commit of the working tree (or 'unknown' outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
