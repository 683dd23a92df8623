"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Only the tensor functions need torch, and they import it themselves: the simulation's caller
writes its JSON and reports with this module and stays a process without torch (about 700 MB less
beside the fleet; :mod:`swarm.isolated`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def save_tensors(path: Path, state: dict[str, Any]) -> None:
    """Save tensors (a state dict, plus plain metadata) so that ``torch.load(weights_only=True)`` reads them."""
    import torch

    _atomic(path, lambda f: torch.save(state, f))


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)
