"""Which job scripts a backend may run: only files inside the config's ``jobs.allowed_dirs``
(after resolving links and ``..``), so a client can run only what the lab put there."""

from __future__ import annotations

import os
from pathlib import Path

from ..engine.errors import BadRequest, shown


def allowed_script(script: str, base: Path, allowed_dirs: list[Path], access: int) -> str:
    """The script's resolved path; bad_request when it is outside the allowed directories,
    missing, or lacks ``access`` (os.X_OK to run it here, os.R_OK to hand it to Slurm)."""
    try:
        path = (base / script).resolve()
    except (ValueError, OSError):               # a NUL byte, a loop of links
        raise BadRequest(f"job_script {shown(script)} is not a usable path") from None
    if not any(path.is_relative_to(d) for d in allowed_dirs):
        raise BadRequest(f"job_script {shown(script)} is not in an allowed directory "
                         f"({', '.join(map(str, allowed_dirs)) or 'none configured'})")
    if not path.is_file():
        raise BadRequest(f"job_script {shown(script)} does not exist")
    if not os.access(path, access):
        raise BadRequest(f"job_script {shown(script)} is not "
                         f"{'executable' if access == os.X_OK else 'readable'}")
    return str(path)
