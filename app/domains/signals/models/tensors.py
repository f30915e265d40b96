"""Saving and loading torch weights as a plain state_dict: tensors only, hash-checked, never pickle."""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def seeded_torch(seed: int | None, threads: int = 1) -> Iterator[None]:
    """One thread, deterministic algorithms and (with a seed) a private seeded RNG, so training
    is repeatable; torch's process-wide settings are restored afterwards."""
    previous_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        if seed is None:
            yield
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(previous_threads)
