"""Sphericity of digitized spheres and 2:1 spheroids: the pore table's two engines against the exact values.

``python -m benchmarks.pore_spheres`` prints the markdown table quoted in benchmarks/NOTES.md: for
each radius (2-20 voxels, the foam's pore sizes at the quick and benchmark resolutions), shapes
digitized at 8 random sub-voxel centres, measured with :func:`resrecover.evaluate.pore_surface.measure_pores`
by the compiled engine (classic marching cubes, what ``pore_table`` runs) and by the scikit-image
engine (Lewiner's marching cubes, what ``pore_table`` ran before), sphericity unclipped.
"""

from __future__ import annotations

import argparse

import numpy as np

from resrecover.evaluate.pore_surface import SURFACE_SMOOTHING_VOX, measure_pores, rescaled_area

RADII = (2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0)


def spheroid_sphericity(a: float, b: float) -> float:
    """Exact sphericity of a prolate spheroid with semi-axes a ≥ b = c (a = b: a sphere, 1)."""
    if a == b:
        return 1.0
    e = np.sqrt(1.0 - (b / a) ** 2)
    area = 2 * np.pi * b * b * (1 + a / (b * e) * np.arcsin(e))
    volume = 4 / 3 * np.pi * a * b * b
    return float(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area)


def digitized(a: float, b: float, rng: np.random.Generator) -> np.ndarray:
    """int32 labels: 1 on the voxel centres inside the spheroid x²/a² + (y² + z²)/b² ≤ 1, centre jittered."""
    n = int(np.ceil(2 * a)) + 8
    centre = (n - 1) / 2 + rng.uniform(-0.5, 0.5, 3)
    z, y, x = np.ogrid[:n, :n, :n]
    inside = ((x - centre[2]) / a) ** 2 + ((y - centre[1]) / b) ** 2 + ((z - centre[0]) / b) ** 2 <= 1.0
    return inside.astype(np.int32)


def sphericities(labels: np.ndarray, engine: str) -> float:
    """Unclipped sphericity of the one pore of ``labels`` by the pore table's recipe and ``engine``."""
    _, counts, _, area_volume = measure_pores(labels, SURFACE_SMOOTHING_VOX, 1, engine)
    n = counts.astype(np.float64)
    area = rescaled_area(area_volume[:, 0], area_volume[:, 1], n)
    return float((np.pi ** (1 / 3) * (6 * n) ** (2 / 3) / area)[0])


def table(n_centres: int = 8, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = [
        "| shape | radius b (voxels) | exact | compiled (classic MC): mean [min, max] | "
        "scikit-image (Lewiner): mean [min, max] | max \\|compiled − scikit-image\\| |",
        "|---|---|---|---|---|---|",
    ]
    for aspect in (1.0, 2.0):
        for b in RADII if aspect == 1.0 else RADII[:-2]:
            exact = spheroid_sphericity(aspect * b, b)
            new, old = [], []
            for _ in range(n_centres):
                labels = digitized(aspect * b, b, rng)
                new.append(sphericities(labels, "auto"))
                old.append(sphericities(labels, "skimage"))
            new, old = np.array(new), np.array(old)
            shape = "sphere" if aspect == 1.0 else "2:1 spheroid"
            lines.append(
                f"| {shape} | {b:g} | {exact:.4f} | {new.mean():.4f} [{new.min():.4f}, {new.max():.4f}] | "
                f"{old.mean():.4f} [{old.min():.4f}, {old.max():.4f}] | {np.abs(new - old).max():.1e} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--centres", type=int, default=8)
    args = parser.parse_args()
    print(table(args.centres))


if __name__ == "__main__":
    main()
