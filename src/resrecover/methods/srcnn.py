"""SRCNN-3D: three 3D convolutions with batch normalization (docs/design.md#training; paper §2.1.2, Wang et al. 2019).

Patch extraction (k1³ conv, f1 filters), non-linear mapping (k2³ conv, f2 filters) and
reconstruction (k3³ conv, 1 filter); batch normalization and ReLU after the two hidden layers;
zero "same" padding so that the output has the input's size.

The network predicts a residual that is added to its input (``output = input + net(input)``):
on our LRES/HRES pairs this trains faster and reaches a lower validation loss than predicting the
HRES volume directly, because an untrained residual network already returns the LRES volume.
"""

from __future__ import annotations

import torch
from torch import nn


class SRCNN3D(nn.Module):
    """(B, 1, D, H, W) -> (B, 1, D, H, W), any D, H, W.

    Parameters
    ----------
    kernels : odd cube edges of the three convolutions (paper: 9-5-5 or 9-1-5).
    filters : channels of the two hidden layers (paper: 64, 32).
    residual : add the input to the network's output (True, see the module docstring).
    """

    def __init__(self, kernels=(9, 5, 5), filters=(64, 32), residual: bool = True):
        super().__init__()
        kernels = tuple(int(k) for k in kernels)
        filters = tuple(int(f) for f in filters)
        if len(kernels) != 3 or len(filters) != 2:
            raise ValueError(f"SRCNN3D: expected 3 kernels and 2 filter counts, got {kernels}, {filters}")
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"SRCNN3D: kernels must be odd for same-size output, got {kernels}")
        self.kernels = kernels
        self.filters = filters
        self.residual = bool(residual)
        k1, k2, k3 = kernels
        f1, f2 = filters
        self.body = nn.Sequential(
            nn.Conv3d(1, f1, k1, padding=k1 // 2, bias=False),
            nn.BatchNorm3d(f1),
            nn.ReLU(inplace=True),
            nn.Conv3d(f1, f2, k2, padding=k2 // 2, bias=False),
            nn.BatchNorm3d(f2),
            nn.ReLU(inplace=True),
            nn.Conv3d(f2, 1, k3, padding=k3 // 2),
        )
        if self.residual:
            # start at the identity (output == input) and learn the correction
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)

    def architecture(self) -> dict:
        """Constructor arguments, stored with the weights so that the model can be rebuilt."""
        return {"kernels": list(self.kernels), "filters": list(self.filters), "residual": self.residual}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"SRCNN3D expects (B, 1, D, H, W), got {tuple(x.shape)}")
        y = self.body(x)
        return x + y if self.residual else y
