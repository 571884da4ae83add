"""Checking path settings when the configuration loads: the data directory (``home``) must be a
directory, or a path where one can be created, so that ``hubbub config check`` says so rather than
``hubbub serve`` failing on it later."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["directory_problem"]


def directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a data directory, or ``None`` when it can: it is a directory
    this process may write in, or it does not exist and its nearest existing parent is such a
    directory (it is created on first use)."""
    try:
        if path.exists():
            if not path.is_dir():
                return f"{path} exists and is not a directory"
            if not os.access(path, os.W_OK | os.X_OK):
                return f"{path} is a directory this process may not write in"
            return None
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    except OSError as exc:  # a path too long, a loop of links...
        return f"{path} cannot be used: {exc.strerror or exc}"
    if not parent.is_dir():
        return f"{path} cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {parent} is a directory this process may not write in"
    return None
