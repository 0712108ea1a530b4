"""Small models with the state_dict protocol, shared by the training and dashboard tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class Model:
    """A NumPy 'model' with the state_dict protocol."""

    def __init__(self, value: float = 0.0) -> None:
        self.w = np.full(4, value)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w[...] = state["w"]


class ListModel:
    """A model holding a plain list, for tests that need no NumPy."""

    def __init__(self) -> None:
        self.w = [0.0]

    def state_dict(self) -> dict[str, Any]:
        return {"w": list(self.w)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = list(state["w"])


def files(path: Path) -> list[str]:
    """The names of the files directly in ``path``, sorted."""
    return sorted(p.name for p in path.iterdir() if p.is_file())
