"""One cone-beam geometry for both backends (docs/ct_geometry.md#the-frame).

The frame is the one ASTRA uses natively: rotation axis z, numpy volume ``vol[z, y, x]`` centred on
the axis, source at ``(SOD·sinθ, -SOD·cosθ, 0)``, flat detector at distance ``SDD - SOD`` beyond
the axis with its centre on the central ray, column index along ``(cosθ, sinθ, 0)`` and row index
along ``+z``. Projections are stored as ``(n_angles, n_det_rows, n_det_cols)``. All lengths are µm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .. import ResrecoverError


class GeometryError(ResrecoverError):
    """A scan geometry that cannot image the volume (source inside it, bad counts...)."""


def full_circle_angles(n_angles: int, first_angle_rad: float = 0.0) -> np.ndarray:
    """``n_angles`` equally spaced projection angles (radians) over 360°, starting at ``first_angle_rad``."""
    if n_angles < 1:
        raise GeometryError(f"n_angles: {n_angles}; expected at least 1 projection")
    return first_angle_rad + 2 * np.pi * np.arange(n_angles) / n_angles


@dataclass(frozen=True)
class ConeBeamGeometry:
    """A circular cone-beam scan of a voxel grid on a flat detector.

    Parameters
    ----------
    volume_shape : (nz, ny, nx) voxels of the reconstruction grid, centred on the rotation axis.
    voxel_size_um : edge of one cubic voxel (µm).
    sod_um : source-to-object (rotation axis) distance (µm).
    sdd_um : source-to-detector distance (µm).
    n_det_rows, n_det_cols : detector size in pixels (rows along the rotation axis).
    angles_rad : projection angles (radians), stored as a tuple of floats.
    pitch_um : detector pixel edge (µm); default ``voxel_size_um × sdd_um / sod_um`` so that one
        detector pixel spans one voxel at the rotation axis.
    """

    volume_shape: tuple[int, int, int]
    voxel_size_um: float
    sod_um: float
    sdd_um: float
    n_det_rows: int
    n_det_cols: int
    angles_rad: tuple[float, ...] = field(repr=False)
    pitch_um: float | None = None

    def __post_init__(self):
        shape = tuple(int(n) for n in self.volume_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise GeometryError(f"volume_shape: {self.volume_shape}; expected three positive voxel counts (nz, ny, nx)")
        object.__setattr__(self, "volume_shape", shape)
        for name in ("voxel_size_um", "sod_um", "sdd_um"):
            value = float(getattr(self, name))
            if not value > 0:
                raise GeometryError(f"{name}: {value}; expected a positive length in µm")
            object.__setattr__(self, name, value)
        if self.sdd_um <= self.sod_um:
            raise GeometryError(
                f"sdd_um: {self.sdd_um} must exceed sod_um ({self.sod_um}); the detector lies beyond the object"
            )
        for name in ("n_det_rows", "n_det_cols"):
            value = int(getattr(self, name))
            if value < 1:
                raise GeometryError(f"{name}: {value}; expected at least one detector pixel")
            object.__setattr__(self, name, value)
        angles = tuple(float(a) for a in np.asarray(self.angles_rad, dtype=np.float64).ravel())
        if not angles:
            raise GeometryError("angles_rad: empty; expected at least one projection angle")
        object.__setattr__(self, "angles_rad", angles)
        pitch = self.voxel_size_um * self.magnification if self.pitch_um is None else float(self.pitch_um)
        if not pitch > 0:
            raise GeometryError(f"pitch_um: {pitch}; expected a positive detector pixel size in µm")
        object.__setattr__(self, "pitch_um", pitch)

    # ---- derived quantities -----------------------------------------------------------------
    @property
    def magnification(self) -> float:
        """Geometric magnification at the rotation axis, ``SDD / SOD``."""
        return self.sdd_um / self.sod_um

    @property
    def odd_um(self) -> float:
        """Object (axis) to detector distance, ``SDD - SOD`` (µm); ASTRA's ``origin_det``."""
        return self.sdd_um - self.sod_um

    @property
    def n_angles(self) -> int:
        return len(self.angles_rad)

    @property
    def angles(self) -> np.ndarray:
        """Projection angles (radians) as a float64 array."""
        return np.asarray(self.angles_rad, dtype=np.float64)

    @property
    def projection_shape(self) -> tuple[int, int, int]:
        """(n_angles, n_det_rows, n_det_cols): the layout of every projection stack."""
        return (self.n_angles, self.n_det_rows, self.n_det_cols)

    def sigma_px(self, sigma_um: float) -> float:
        """Detector pixels of a Gaussian of ``sigma_um`` (µm) at the object plane: ``σ·M / pitch``."""
        return float(sigma_um) * self.magnification / self.pitch_um

    # ---- variants ---------------------------------------------------------------------------
    def with_angles(self, angles_rad) -> ConeBeamGeometry:
        """The same scan with other projection angles (a subset, or another count)."""
        return replace(self, angles_rad=tuple(np.asarray(angles_rad, dtype=np.float64).ravel()))

    def with_n_angles(self, n_angles: int) -> ConeBeamGeometry:
        """The same scan with ``n_angles`` equally spaced views over 360°."""
        return self.with_angles(full_circle_angles(n_angles))

    # ---- construction and storage -----------------------------------------------------------
    @classmethod
    def covering(
        cls,
        volume_shape: tuple[int, int, int],
        voxel_size_um: float,
        sod_um: float,
        sdd_um: float,
        n_angles: int,
        margin_px: int = 0,
        pitch_um: float | None = None,
    ) -> ConeBeamGeometry:
        """A geometry whose detector sees the whole voxel grid at every angle, plus ``margin_px``.

        Columns: the grid turns inside the circle through its xy corners (radius ``r``); seen from
        the source, that circle spans ``±SDD·r/√(SOD² − r²)`` on the detector (tangent rays).
        Rows: the top and bottom faces (``±nz·vs/2``) are magnified most where they are nearest to
        the source, at depth ``r`` towards it: ``±(nz·vs/2)·SDD/(SOD − r)``. Counts get the parity of
        the grid (columns of nx, rows of nz) so that pixel and voxel centres line up at the axis.
        """
        nz, ny, nx = (int(n) for n in volume_shape)
        vs = float(voxel_size_um)
        radius = 0.5 * vs * math.hypot(nx, ny)
        if sod_um <= radius:
            raise GeometryError(
                f"source_to_object_um: {sod_um} puts the source inside the volume (its corners reach "
                f"{radius:.1f} µm from the axis); expected more than {radius:.1f} µm"
            )
        pitch = vs * sdd_um / sod_um if pitch_um is None else float(pitch_um)
        half_u = sdd_um * radius / math.sqrt(sod_um**2 - radius**2)
        half_v = 0.5 * nz * vs * sdd_um / (sod_um - radius)

        def count(half_width: float, parity_of: int) -> int:
            n = math.ceil(2 * half_width / pitch - 1e-9) + 2 * int(margin_px)
            return n + ((n - parity_of) % 2)

        return cls(
            volume_shape=(nz, ny, nx),
            voxel_size_um=vs,
            sod_um=float(sod_um),
            sdd_um=float(sdd_um),
            n_det_rows=count(half_v, nz),
            n_det_cols=count(half_u, nx),
            angles_rad=tuple(full_circle_angles(n_angles)),
            pitch_um=pitch,
        )

    @classmethod
    def from_config(cls, config: dict, n_projections: int | None = None) -> ConeBeamGeometry:
        """The configured scan (``config['scan']``) of the configured grid, ``n_projections`` views over 360°.

        ``n_projections`` defaults to ``scan.n_projections``; the ground truth passes
        ``scan.n_projections_ground_truth``.
        """
        try:
            scan = config["scan"]
            n = int(n_projections if n_projections is not None else scan["n_projections"])
            return cls.covering(
                volume_shape=tuple(config["volume_shape"]),
                voxel_size_um=float(config["voxel_size_um"]),
                sod_um=float(scan["source_to_object_um"]),
                sdd_um=float(scan["source_to_detector_um"]),
                n_angles=n,
                margin_px=int(scan["detector_margin_px"]),
            )
        except KeyError as exc:
            raise GeometryError(f"config: missing key {exc}; validate the config first (resrecover.config)") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, floats, ints); inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["volume_shape"] = list(self.volume_shape)
        d["angles_rad"] = list(self.angles_rad)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConeBeamGeometry:
        """Rebuild a geometry stored with :meth:`to_dict` (unknown keys are an error)."""
        names = {f for f in cls.__dataclass_fields__}
        extra = set(d) - names
        missing = names - set(d) - {"pitch_um"}
        if extra or missing:
            raise GeometryError(
                f"geometry: unknown key(s) {sorted(extra)} / missing key(s) {sorted(missing)}; "
                f"expected {sorted(names)}"
            )
        return cls(**{k: (tuple(v) if k in ("volume_shape", "angles_rad") else v) for k, v in d.items()})


def interleaved_subsets(n_angles: int, max_size: int) -> list[np.ndarray]:
    """Split ``range(n_angles)`` into ``k`` interleaved index sets ``j, j+k, j+2k, ...`` of equal size.

    Each subset of an equally spaced 360° scan is itself an equally spaced 360° scan, so the mean of
    their FDKs equals the FDK of all views (FDK is linear; docs/ct_geometry.md). ``k`` is the smallest
    divisor of ``n_angles`` that keeps every subset at most ``max_size`` views: equal sizes keep
    both backends' angular weights exact (ASTRA weights by ``π/(2N)``, RTK by the gaps).
    """
    max_size = max(1, int(max_size))
    if n_angles <= max_size:
        return [np.arange(n_angles)]
    k = next(k for k in range(math.ceil(n_angles / max_size), n_angles + 1) if n_angles % k == 0)
    return [np.arange(j, n_angles, k) for j in range(k)]
