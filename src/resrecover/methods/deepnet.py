"""DeepNet: an open 2.5D U-Net with a convolutional refinement head (docs/design.md#training; paper §2.1.1).

The network sees ``n_slices`` consecutive z slices as channels and predicts the same slices. A
U-Net (contracting path of conv + max-pool, expanding path of transposed conv + skip connection +
conv) produces the *intermediate* output; a few more convolutions refine it into the *final*
output. The loss is a weighted sum over both (see :mod:`resrecover.methods.training`).

Both outputs are residuals on their inputs: the U-Net predicts ``target - input`` (added back to
the input slices) and the refinement predicts a correction of the intermediate output. Residual
learning starts the network at the identity (the LRES volume), which trains faster and more stably
than predicting the HRES volume from scratch on a single training pair.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    """Two [3×3 conv (+ batch norm) + ReLU] layers, padding keeps the size."""
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DeepNet(nn.Module):
    """2.5D U-Net, (B, n_slices, H, W) -> (B, n_slices, H, W), with H and W divisible by ``2**depth``.

    Parameters
    ----------
    n_slices : consecutive z slices, taken as channels in and out (paper: 5).
    base_channels : channels of the first level; each level down doubles them.
    depth : number of max-pool steps (levels below the first).
    extra_convs : 3×3 conv layers of the refinement head after the U-Net (0 = final = intermediate).
    batch_norm : batch normalization after every U-Net convolution.
    """

    def __init__(
        self,
        n_slices: int = 5,
        base_channels: int = 32,
        depth: int = 4,
        extra_convs: int = 3,
        batch_norm: bool = True,
    ):
        super().__init__()
        self.n_slices = int(n_slices)
        self.base_channels = int(base_channels)
        self.depth = int(depth)
        self.extra_convs = int(extra_convs)
        self.batch_norm = bool(batch_norm)
        channels = [self.base_channels * 2**level for level in range(self.depth + 1)]

        self.down = nn.ModuleList()
        c_in = self.n_slices
        for c in channels[:-1]:
            self.down.append(_conv_block(c_in, c, self.batch_norm))
            c_in = c
        self.pool = nn.MaxPool2d(2)
        self.bottom = _conv_block(channels[-2], channels[-1], self.batch_norm)
        self.up = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for level in reversed(range(self.depth)):
            self.up.append(nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2))
            self.up_convs.append(_conv_block(2 * channels[level], channels[level], self.batch_norm))
        self.head = nn.Conv2d(channels[0], self.n_slices, 1)

        refine: list[nn.Module] = []
        if self.extra_convs == 1:
            refine.append(nn.Conv2d(self.n_slices, self.n_slices, 3, padding=1))
        elif self.extra_convs > 1:
            c_in = self.n_slices
            for _ in range(self.extra_convs - 1):
                refine += [nn.Conv2d(c_in, self.base_channels, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = self.base_channels
            refine.append(nn.Conv2d(c_in, self.n_slices, 3, padding=1))
        self.refine = nn.Sequential(*refine)
        if refine:
            # start the refinement at the identity: final == intermediate until it learns something
            nn.init.zeros_(refine[-1].weight)
            nn.init.zeros_(refine[-1].bias)

    def architecture(self) -> dict:
        """Constructor arguments, stored with the weights so that the model can be rebuilt."""
        return {
            "n_slices": self.n_slices,
            "base_channels": self.base_channels,
            "depth": self.depth,
            "extra_convs": self.extra_convs,
            "batch_norm": self.batch_norm,
        }

    def forward(self, x: torch.Tensor, return_intermediate: bool = False):
        """Recover ``x`` (B, n_slices, H, W); with ``return_intermediate`` also the U-Net output.

        Returns ``final`` or ``(final, intermediate)``, both (B, n_slices, H, W).
        """
        if x.ndim != 4 or x.shape[1] != self.n_slices:
            raise ValueError(f"DeepNet expects (B, {self.n_slices}, H, W), got {tuple(x.shape)}")
        multiple = 2**self.depth
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"DeepNet: H and W must be divisible by {multiple}, got {tuple(x.shape[-2:])}")
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for up, block, skip in zip(self.up, self.up_convs, reversed(skips)):
            h = block(torch.cat([up(h), skip], dim=1))
        intermediate = x + self.head(h)
        final = intermediate + self.refine(intermediate) if self.extra_convs else intermediate
        return (final, intermediate) if return_intermediate else final
