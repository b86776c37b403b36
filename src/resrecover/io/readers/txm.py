"""Zeiss reader: a reconstructed volume (``scan.txm``, OLE2) read slice by slice through ``txrm2tiff``.

``txrm2tiff`` is optional (``pip install txrm2tiff``); it is imported when a .txm is opened, so
installations without it read every other format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..volume import InputError
from .base import SliceStackSource, VolumeSource, resolve_voxel_size


class _TxmSource(SliceStackSource):
    """A Zeiss reconstruction (.txm, OLE2) read slice by slice through ``txrm2tiff``.

    Slices are flipped in y, as ``txrm2tiff`` does when it converts to TIFF (the stored order is
    upside down relative to Zeiss' viewers), so a .txm and its TIFF export read the same.
    """

    format = "txm"

    def __init__(self, path, txrm, handle, shape, dtype, voxel_size_um, check_finite):
        super().__init__(path, shape, dtype, voxel_size_um, check_finite)
        self._txrm = txrm
        self._handle = handle

    def _read_slice(self, z):
        image = np.asarray(self._txrm.get_single_image(z + 1))  # txrm2tiff counts images from 1
        if image.size != self.shape[1] * self.shape[2]:
            raise InputError(f"{self.path}: image {z + 1} holds {image.size} values; expected "
                             f"{self.shape[1]}x{self.shape[2]} (truncated file?)")
        return image.reshape(self.shape[1:])[::-1, :]

    def close(self):
        if self._handle is not None:
            self._txrm.close()
            self._handle.close()
            self._handle = None


def open_txm(path: Path, voxel_size_um, check_finite) -> VolumeSource:
    """A Zeiss .txm reconstruction as a source (a .txrm, which holds projections, is refused)."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.suffix.lower() == ".txrm":
        raise InputError(
            f"{path}: a .txrm file holds projections (one image per angle), not a reconstructed volume; "
            "reconstruct it (Zeiss Reconstructor, .txm) or export the reconstruction as TIFF"
        )
    try:
        from txrm2tiff import open_txrm
    except ImportError:
        raise InputError(f"{path}: install txrm2tiff to read Zeiss .txrm/.txm (pip install txrm2tiff)") from None
    handle = open(path, "rb")
    try:
        # An open file handle: txrm2tiff refuses paths not named .txrm/.xrm, but reads any OLE2 stream.
        # Not strict: optional streams a reconstruction may lack only log; what we need is checked here.
        txrm = open_txrm(handle, load_images=False, load_reference=False, strict=False)
        info = txrm.image_info
        n = (info.get("ImagesTaken") or info.get("NoOfImages") or [0])[0]
        width = (info.get("ImageWidth") or [0])[0]
        height = (info.get("ImageHeight") or [0])[0]
        if max((info.get("MosiacColumns") or [0])[0], (info.get("MosiacRows") or [0])[0]) > 1:
            raise InputError(f"{path}: a mosaic; expected a reconstructed volume")
        dtype = txrm.image_dtype.value if txrm.image_dtype is not None else np.float32
        pixel = (info.get("PixelSize") or [None])[0]
        from_file = float(pixel) if pixel and pixel > 0 else None
    except InputError:
        handle.close()
        raise
    except Exception as exc:
        handle.close()
        raise InputError(f"{path}: not a readable Zeiss .txm file: {type(exc).__name__}: {exc}") from exc
    if not n or not width or not height:
        handle.close()
        raise InputError(f"{path}: .txm with {n} images of {width}x{height} pixels; expected a volume")
    voxel = resolve_voxel_size(path, from_file, voxel_size_um)
    return _TxmSource(path, txrm, handle, (int(n), int(height), int(width)), dtype, voxel, check_finite)
