"""The diffusion networks' time input: one helper for every network that takes a time step (IR-SDE's UNet and
NAFNet, DiffPIR's guided-diffusion UNet)."""

from __future__ import annotations

import torch

TimeInput = int | float | torch.Tensor


def time_vector(t: TimeInput, batch: int, device: torch.device) -> torch.Tensor:
    """Turn a number, a 0-d tensor, or a tensor of one or ``batch`` values into a (batch,) float32 vector.

    The official networks accept only numbers and (B,) tensors; the SDE and sampler code around them sometimes
    hands over (B, 1, 1, 1) or 0-d tensors, so every shape holding one value or one value per sample is accepted.
    """
    if not isinstance(t, torch.Tensor):
        return torch.full((batch,), float(t), device=device, dtype=torch.float32)
    flat = t.detach().reshape(-1).to(device=device, dtype=torch.float32)
    if flat.numel() == 1:
        return flat.expand(batch)
    if flat.numel() != batch:
        raise ValueError(f"time has {flat.numel()} values for a batch of {batch}: give one or one per sample")
    return flat
