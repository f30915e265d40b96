"""Saving and loading torch weights as a plain state_dict: tensors only, hash-checked, never pickle."""

import hashlib
from pathlib import Path

import torch
from torch import nn


def save_state_dict(module: nn.Module, path: Path) -> str:
    """Write the module's state_dict to `path`; returns the file's SHA-256."""
    torch.save(module.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_state_dict(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state_dict with `weights_only=True` (which refuses pickled objects), optionally hash-checked."""
    if expected_sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected_sha256:
            raise ValueError(f"{path} has SHA-256 {digest}, expected {expected_sha256}")
    state = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    return state
