"""A model's weights as the bytes the store keeps: torch.save of its state dict, read back with
torch.load(weights_only=True), which refuses a blob that holds code instead of running it."""

import io

import torch


def to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def from_bytes(blob: bytes) -> dict[str, torch.Tensor]:
    """The state dict; tensors only (weights_only: a blob that holds code is refused, not run)."""
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
