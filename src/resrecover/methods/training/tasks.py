"""Batches and losses of each network: what one training iteration draws and minimizes.

DeepNet (paper §2.1.1): random tiles of ``tile_px``² × ``n_slices`` consecutive slices with random
in-plane flips and 90° rotations; loss = w1·SSE(intermediate) + w2·SSE(final) over the voxels of
the reconstructable FOV. With ``tile_sampling: foam`` a tile's centre is drawn among the pixels
of the FOV only, so that no batch is spent on the air around the sample.

SRCNN-3D (paper §2.1.2): 3D patches of ``patch_px``³ on a grid of stride ``patch_stride_px`` whose
centre lies in the FOV, split into training and validation patches; MSE over FOV voxels.

Every batch comes from a generator seeded by ``(seed, iteration)``, so the data of an iteration
does not depend on how many times the run was interrupted.
"""

from __future__ import annotations

import numpy as np
import torch

from .settings import TrainingError

# independent random streams derived from the run's seed
STREAM_BATCH = 1
STREAM_SPLIT = 2




def _augment(arrays: list[np.ndarray], rng: np.random.Generator, axes_yx=(-2, -1)) -> list[np.ndarray]:
    """The same random in-plane flips and 90° rotation applied to every array of ``arrays``."""
    flip_y, flip_x, quarter_turns = rng.integers(0, 2), rng.integers(0, 2), rng.integers(0, 4)
    out = []
    for a in arrays:
        if flip_y:
            a = np.flip(a, axes_yx[0])
        if flip_x:
            a = np.flip(a, axes_yx[1])
        out.append(np.ascontiguousarray(np.rot90(a, int(quarter_turns), axes=axes_yx)))
    return out


def _masked_sse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2 * mask).sum()


class DeepNetTask:
    """Random (n_slices, tile, tile) stacks and the two-term FOV loss of DeepNet."""

    def __init__(self, x, y, mask, block, seed, device, augment=True):
        self.x, self.y, self.mask = x, y, mask
        self.n = int(block["n_slices"])
        self.tile = int(block["tile_px"])
        self.batch_size = int(block["batch_size"])
        self.w1, self.w2 = (float(w) for w in block["loss_weights"])
        self.seed, self.device, self.augment = seed, device, augment
        nz, ny, nx = x.shape
        if nz < self.n:
            raise TrainingError(f"deepnet.n_slices: {self.n} exceeds the volume's {nz} slices")
        if self.tile > min(ny, nx):
            raise TrainingError(f"deepnet.tile_px: {self.tile} exceeds the slice size {ny}×{nx}")
        if self.tile % 2 ** int(block["depth"]):
            raise TrainingError(f"deepnet.tile_px: {self.tile} is not divisible by 2**deepnet.depth")
        self.corners_yx = tile_corners_yx(mask, self.tile, block.get("tile_sampling", "uniform"))

    def batch(self, iteration: int):
        rng = np.random.default_rng([self.seed, STREAM_BATCH, iteration])
        nz, ny, nx = self.x.shape
        xs, ys, ms = [], [], []
        for _ in range(self.batch_size):
            z0 = int(rng.integers(0, nz - self.n + 1))
            if self.corners_yx is None:
                y0 = int(rng.integers(0, ny - self.tile + 1))
                x0 = int(rng.integers(0, nx - self.tile + 1))
            else:
                y0, x0 = (int(c) for c in self.corners_yx[rng.integers(0, len(self.corners_yx))])
            window = (slice(z0, z0 + self.n), slice(y0, y0 + self.tile), slice(x0, x0 + self.tile))
            tiles = [self.x[window], self.y[window], self.mask[window].astype(np.float32)]
            if self.augment:
                tiles = _augment(tiles, rng)
            xs.append(tiles[0])
            ys.append(tiles[1])
            ms.append(tiles[2])
        return tuple(torch.from_numpy(np.stack(a)).to(self.device) for a in (xs, ys, ms))

    def losses(self, model, batch):
        x, y, m = batch
        final, intermediate = model(x, return_intermediate=True)
        sse_int = _masked_sse(intermediate, y, m)
        sse_final = _masked_sse(final, y, m)
        loss = self.w1 * sse_int + self.w2 * sse_final
        count = max(float(m.sum()), 1.0)
        return loss, {
            "loss_intermediate": float(sse_int.detach()) / count,
            "loss_final": float(sse_final.detach()) / count,
            "loss": float(loss.detach()) / count,
        }

    validate = None


def tile_corners_yx(mask: np.ndarray, tile: int, sampling: str) -> np.ndarray | None:
    """(n, 2) y-x corners of the ``tile``² tiles whose centre pixel lies in the FOV of some slice.

    ``sampling='uniform'`` returns ``None`` (every corner is drawn uniformly); ``'foam'`` keeps the
    corners whose tile centre lies inside the FOV mask's footprint, or all of them when none does.
    """
    if sampling == "uniform":
        return None
    if sampling != "foam":
        raise TrainingError(f"deepnet.tile_sampling: {sampling!r} is not allowed; expected 'uniform' or 'foam'")
    footprint = np.asarray(mask).any(axis=0)
    ny, nx = footprint.shape
    ys, xs = np.meshgrid(np.arange(ny - tile + 1), np.arange(nx - tile + 1), indexing="ij")
    inside = footprint[ys + tile // 2, xs + tile // 2]
    if not inside.any():
        inside[:] = True
    return np.stack([ys[inside], xs[inside]], axis=1)


def patch_corners(shape, patch_px: int, stride_px: int, mask: np.ndarray | None = None) -> np.ndarray:
    """(n, 3) z-y-x corners of the ``patch_px``³ patches on a grid of ``stride_px`` inside ``shape``.

    With ``mask``, only patches whose centre voxel lies in the mask are kept.
    """
    axes = [np.arange(0, n - patch_px + 1, stride_px) for n in shape]
    if any(len(a) == 0 for a in axes):
        return np.zeros((0, 3), dtype=np.int64)
    corners = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    if mask is not None:
        centre = corners + patch_px // 2
        corners = corners[mask[centre[:, 0], centre[:, 1], centre[:, 2]]]
    return corners


def split_patches(corners: np.ndarray, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of patch corners into (training, validation); both non-empty."""
    n = len(corners)
    if n < 2:
        raise TrainingError(f"srcnn: only {n} patch(es) in the FOV; need at least 2 (reduce srcnn.patch_px)")
    order = np.random.default_rng([seed, STREAM_SPLIT]).permutation(n)
    n_val = min(max(1, int(round(validation_fraction * n))), n - 1)
    return corners[np.sort(order[n_val:])], corners[np.sort(order[:n_val])]


class SrcnnTask:
    """3D patches, a training/validation split and the masked MSE of SRCNN-3D."""

    def __init__(self, x, y, mask, block, seed, device, augment=True, max_validation_patches=None):
        self.x, self.y, self.mask = x, y, mask
        self.p = int(block["patch_px"])
        self.batch_size = int(block["batch_size"])
        self.seed, self.device, self.augment = seed, device, augment
        if self.p > min(x.shape):
            raise TrainingError(f"srcnn.patch_px: {self.p} exceeds the volume shape {x.shape}")
        corners = patch_corners(x.shape, self.p, int(block["patch_stride_px"]), mask)
        self.train_corners, self.val_corners = split_patches(corners, float(block["validation_fraction"]), seed)
        if max_validation_patches is not None:
            self.val_corners = self.val_corners[: int(max_validation_patches)]

    def _patches(self, corners):
        p = self.p
        windows = [(slice(z, z + p), slice(y, y + p), slice(x, x + p)) for z, y, x in corners]
        return [[self.x[w], self.y[w], self.mask[w].astype(np.float32)] for w in windows]

    @staticmethod
    def _to_batch(patches, device):
        return tuple(torch.from_numpy(np.stack([pt[i] for pt in patches])[:, None]).to(device) for i in range(3))

    def batch(self, iteration: int):
        rng = np.random.default_rng([self.seed, STREAM_BATCH, iteration])
        picks = rng.integers(0, len(self.train_corners), self.batch_size)
        patches = self._patches(self.train_corners[picks])
        if self.augment:
            patches = [_augment(pt, rng) for pt in patches]
        return self._to_batch(patches, self.device)

    def losses(self, model, batch):
        x, y, m = batch
        sse = _masked_sse(model(x), y, m)
        count = m.sum().clamp_min(1.0)
        loss = sse / count
        value = float(loss.detach())
        return loss, {"loss": value, "loss_final": value}

    @torch.no_grad()
    def validate(self, model) -> float:
        """Mean squared error per FOV voxel over all validation patches (eval mode)."""
        was_training = model.training
        model.eval()
        sse, count = 0.0, 0.0
        for start in range(0, len(self.val_corners), self.batch_size):
            x, y, m = self._to_batch(self._patches(self.val_corners[start : start + self.batch_size]), self.device)
            sse += float(_masked_sse(model(x), y, m))
            count += float(m.sum())
        model.train(was_training)
        return sse / max(count, 1.0)
