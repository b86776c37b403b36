"""Readers and writers of the formats microscopists have (docs/own_scans.md): round trips, voxel sizes, refusals."""

import os

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from resrecover import ResrecoverError
from resrecover.io import InputError, open_volume, write_volume_as
from resrecover.io.readers import VolumeSource, split_internal_path


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(7)
    return (rng.normal(size=(6, 7, 9)) * 3 + np.arange(9)).astype(np.float32)


@pytest.mark.parametrize(
    "name, fmt, carries_voxel",
    [
        ("v.h5", None, True),
        ("v.zarr", None, True),
        ("v.tif", None, True),
        ("v.tiff", None, True),
        ("v.npy", None, False),
        ("slices", "tiff_folder", True),
    ],
)
def test_round_trip(tmp_path, volume, name, fmt, carries_voxel):
    path = tmp_path / name
    write_volume_as(path, volume, 2.5, format=fmt)
    assert path.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary left behind"
    kwargs = {} if carries_voxel else {"voxel_size_um": 2.5}
    with open_volume(path, **kwargs) as src:
        assert isinstance(src, VolumeSource)
        assert src.shape == volume.shape
        assert src.voxel_size_um == pytest.approx(2.5)
        whole = src[:, :, :]
        assert whole.dtype == np.float32
        np.testing.assert_array_equal(whole, volume)
        # Lazy blocks, integer indices, steps and Ellipsis behave like numpy's.
        np.testing.assert_array_equal(src[2:5, 1:6, ::2], volume[2:5, 1:6, ::2])
        np.testing.assert_array_equal(src[3], volume[3])
        np.testing.assert_array_equal(src[..., 4], volume[..., 4])
        np.testing.assert_array_equal(src[-1, 2], volume[-1, 2])
        slabs = list(src.slabs(4))
        assert [z0 for z0, _ in slabs] == [0, 4]
        np.testing.assert_array_equal(np.concatenate([b for _, b in slabs]), volume)
    if not carries_voxel:  # .npy has no place for a voxel size: it must be given, and the refusal names the file
        with pytest.raises(InputError, match=str(path)):
            open_volume(path)


def test_write_from_a_lazy_source_in_slabs(tmp_path, volume):
    write_volume_as(tmp_path / "a.h5", volume, 1.5)
    with open_volume(tmp_path / "a.h5") as src:
        write_volume_as(tmp_path / "b.zarr", src, src.voxel_size_um, slab_slices=2)
    with open_volume(tmp_path / "b.zarr") as src:
        np.testing.assert_array_equal(src.read(), volume)
        assert src.voxel_size_um == 1.5


def test_overwriting_a_zarr_folder_replaces_it(tmp_path, volume):
    path = tmp_path / "v.zarr"
    write_volume_as(path, volume, 1.0)
    write_volume_as(path, volume[:3] * 2, 3.0)
    with open_volume(path) as src:
        assert src.shape == (3,) + volume.shape[1:]
        np.testing.assert_array_equal(src.read(), volume[:3] * 2)
        assert src.voxel_size_um == 3.0


def test_hdf5_inner_path_dataset_and_element_size(tmp_path, volume):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as fh:
        ds = fh.create_dataset("exchange/recon", data=(volume * 10).astype(np.uint16))
        ds.attrs["element_size_um"] = [0.75, 0.75, 0.75]
        fh.create_dataset("exchange/other", data=volume)
    with open_volume(f"{path}:/exchange/recon") as src:
        assert src.voxel_size_um == 0.75
        assert src.dtype == np.uint16
        np.testing.assert_array_equal(src[:], (volume * 10).astype(np.uint16).astype(np.float32))
    with open_volume(path, dataset="exchange/other", voxel_size_um=2.0) as src:
        np.testing.assert_array_equal(src[:], volume)
    # Two 3D datasets and none named: the refusal lists them.
    with pytest.raises(InputError, match="exchange/other"):
        open_volume(path)
    with pytest.raises(InputError, match="no dataset 'missing'"):
        open_volume(path, dataset="missing")
    assert split_internal_path(f"{path}:/exchange/recon") == (path, "/exchange/recon")


def test_zarr_group_with_path_and_ome_scale(tmp_path, volume):
    path = tmp_path / "scan.zarr"
    group = zarr.open_group(str(path), mode="w")
    arr = group.create_array("0", shape=volume.shape, dtype="float32")
    arr[:] = volume
    group.attrs["multiscales"] = [{
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [500.0, 500.0, 500.0]}]}],
    }]
    with open_volume(path) as src:  # the OME-NGFF full-resolution level, 500 nm voxels
        assert src.voxel_size_um == pytest.approx(0.5)
        np.testing.assert_array_equal(src[1:3], volume[1:3])
    with open_volume(f"{path}:/0") as src:
        assert src.dataset == "0"
        assert src.voxel_size_um == pytest.approx(0.5)


def test_plain_tiff_resolution_in_centimetres(tmp_path, volume):
    path = tmp_path / "plain.tif"
    # 2 µm pixels = 5000 pixels per cm; no z spacing: CT slices are taken as cubic voxels.
    tifffile.imwrite(path, volume, resolution=(5000.0, 5000.0), resolutionunit="CENTIMETER")
    with open_volume(path) as src:
        assert src.voxel_size_um == pytest.approx(2.0)
        np.testing.assert_array_equal(src[:], volume)


def test_missing_voxel_size_is_refused_with_the_file_named(tmp_path, volume):
    tif = tmp_path / "bare.tif"
    tifffile.imwrite(tif, volume)  # default resolution 1/1 with no unit: no size
    with pytest.raises(InputError, match=r"bare\.tif.*no voxel size"):
        open_volume(tif)
    with open_volume(tif, voxel_size_um=4.0) as src:
        assert src.voxel_size_um == 4.0
    h5 = tmp_path / "bare.h5"
    with h5py.File(h5, "w") as fh:
        fh.create_dataset("volume", data=volume)
    with pytest.raises(InputError, match=r"bare\.h5.*no voxel size"):
        open_volume(h5)
    with pytest.raises(InputError, match="voxel_size_um"):
        open_volume(h5, voxel_size_um=-1)


def test_anisotropic_voxels_are_refused(tmp_path, volume):
    path = tmp_path / "aniso.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("volume", data=volume).attrs["element_size_um"] = [2.0, 1.0, 1.0]
    with pytest.raises(InputError, match=r"aniso\.h5.*anisotropic"):
        open_volume(path)


def _slice_folder(tmp_path, volume, names):
    folder = tmp_path / "stack"
    folder.mkdir()
    for image, name in zip(volume, names):
        tifffile.imwrite(folder / name, image, resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    return folder


def test_tiff_folder_natural_order(tmp_path, volume):
    # Unpadded numbers: natural order puts img_2 before img_10 (plain sorting would not).
    volume = np.concatenate([volume, volume[:5] + 100])  # 11 slices: img_1 .. img_11
    names = [f"img_{i + 1}.tif" for i in range(len(volume))]
    folder = _slice_folder(tmp_path, volume, names)
    with open_volume(folder) as src:
        assert src.voxel_size_um == pytest.approx(1.0)
        np.testing.assert_array_equal(src[:], volume)


def test_tiff_folder_missing_slice_is_refused_with_the_file_named(tmp_path, volume):
    write_volume_as(tmp_path / "slices", volume, 1.0, format="tiff_folder")
    os.remove(tmp_path / "slices" / "slice_00003.tif")
    with pytest.raises(InputError, match=r"slice_00003\.tif.*missing"):
        open_volume(tmp_path / "slices")


def test_tiff_folder_mismatched_slice_is_refused_with_the_file_named(tmp_path, volume):
    write_volume_as(tmp_path / "slices", volume, 1.0, format="tiff_folder")
    tifffile.imwrite(tmp_path / "slices" / "slice_00004.tif", volume[4, :-1])
    with pytest.raises(InputError, match=r"slice_00004\.tif.*shape \(6, 9\)"):
        open_volume(tmp_path / "slices")
    tifffile.imwrite(tmp_path / "slices" / "slice_00004.tif", volume[4].astype(np.uint16))
    with pytest.raises(InputError, match=r"slice_00004\.tif.*uint16"):
        open_volume(tmp_path / "slices")


def test_tiff_folder_stray_file_is_refused(tmp_path, volume):
    write_volume_as(tmp_path / "slices", volume, 1.0, format="tiff_folder")
    tifffile.imwrite(tmp_path / "slices" / "overview.tif", volume[0])
    with pytest.raises(InputError, match=r"overview\.tif"):
        open_volume(tmp_path / "slices")


def test_non_finite_values_are_refused(tmp_path, volume):
    bad = volume.copy()
    bad[4, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"out\.h5.*NaN"):
        write_volume_as(tmp_path / "out.h5", bad, 1.0)
    assert list(tmp_path.iterdir()) == []  # nothing left under the name or as a temporary
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("volume", data=bad).attrs["voxel_size_um"] = 1.0
    with open_volume(path) as src:  # lazy: blocks without the NaN read fine
        np.testing.assert_array_equal(src[:4], volume[:4])
        with pytest.raises(InputError, match=r"nan\.h5.*1 NaN/inf"):
            src[:]
    with open_volume(path, check_finite=False) as src:
        assert np.isnan(src[4, 2, 3])
    np.save(tmp_path / "inf.npy", np.where(np.isnan(bad), np.inf, bad))
    with open_volume(tmp_path / "inf.npy", voxel_size_um=1.0) as src, pytest.raises(InputError, match=r"inf\.npy"):
        src.read()


def test_bad_inputs_are_refused(tmp_path, volume):
    with pytest.raises(InputError, match="not found"):
        open_volume(tmp_path / "absent.h5")
    (tmp_path / "v.raw").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match=r"v\.raw.*unknown volume format"):
        open_volume(tmp_path / "v.raw")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"broken\.h5"):
        open_volume(tmp_path / "broken.h5")
    np.save(tmp_path / "flat.npy", volume[0])
    with pytest.raises(InputError, match=r"flat\.npy.*3D"):
        open_volume(tmp_path / "flat.npy", voxel_size_um=1.0)
    with pytest.raises(ResrecoverError, match=r"v\.raw.*cannot write"):
        write_volume_as(tmp_path / "v.raw", volume, 1.0)
    with pytest.raises(ResrecoverError, match="3D"):
        write_volume_as(tmp_path / "x.h5", volume[0], 1.0)
    tifffile.imwrite(tmp_path / "single.tif", volume[0])
    with pytest.raises(InputError, match=r"single\.tif.*2D"):
        open_volume(tmp_path / "single.tif", voxel_size_um=1.0)


def test_zeiss_txrm_projections_are_refused(tmp_path):
    path = tmp_path / "scan.txrm"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"scan\.txrm.*projections"):
        open_volume(path)


def test_zeiss_txm_without_or_with_txrm2tiff(tmp_path):
    path = tmp_path / "scan.txm"
    path.write_bytes(b"not an OLE2 file" * 8)
    try:
        import txrm2tiff  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"scan\.txm.*install txrm2tiff"):
            open_volume(path)
    else:
        with pytest.raises(InputError, match=r"scan\.txm.*not a readable Zeiss"):
            open_volume(path)


# --- Zeiss .txm: a minimal OLE2 (compound file) writer, enough for txrm2tiff to read ----------------

_SECTOR = 512
_END, _FREE, _FATSECT = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD


def _write_ole2(path, streams):
    """Write ``{"Storage/Stream": bytes}`` as a version-3 compound file.

    Every stream must be at least 4096 bytes (the mini-stream cutoff), so that all of them live in
    regular 512-byte sectors and no mini stream is needed; siblings are chained through their right
    pointers (a degenerate tree, which readers walk like any other).
    """
    import struct

    assert all(len(data) >= 4096 for data in streams.values())
    # Directory entries: root, storages, streams (tree: parent -> children list).
    entries = [{"name": "Root Entry", "type": 5, "children": [], "data": b""}]
    index = {"": 0}
    for key, data in streams.items():
        parent = ""
        for part in key.split("/")[:-1]:
            path_so_far = f"{parent}/{part}".strip("/")
            if path_so_far not in index:
                index[path_so_far] = len(entries)
                entries.append({"name": part, "type": 1, "children": [], "data": b""})
                entries[index[parent]]["children"].append(index[path_so_far])
            parent = path_so_far
        entries.append({"name": key.split("/")[-1], "type": 2, "children": [], "data": data})
        entries[index[parent]]["children"].append(len(entries) - 1)
    # Sectors: stream data, then the directory, then the FAT.
    sectors, fat = [], []
    for e in entries:
        if e["type"] != 2:
            e["start"] = _END
            continue
        n = -(-len(e["data"]) // _SECTOR)
        e["start"] = len(sectors)
        padded = e["data"] + b"\0" * (n * _SECTOR - len(e["data"]))
        for i in range(n):
            sectors.append(padded[i * _SECTOR:(i + 1) * _SECTOR])
            fat.append(len(sectors) if i < n - 1 else _END)
    dir_bytes = bytearray()
    for i, e in enumerate(entries):
        kids = e["children"]
        child = kids[0] if kids else _FREE
        right = _FREE
        for siblings in (x["children"] for x in entries):
            if i in siblings and siblings.index(i) + 1 < len(siblings):
                right = siblings[siblings.index(i) + 1]
        name = e["name"].encode("utf-16-le") + b"\0\0"
        dir_bytes += struct.pack("<64sHBBIII16sIQQIQ", name, len(name), e["type"], 1, _FREE, right, child,
                                 b"\0" * 16, 0, 0, 0, e["start"], len(e["data"]))
    dir_bytes += b"\0" * (-len(dir_bytes) % _SECTOR)
    first_dir = len(sectors)
    n_dir = len(dir_bytes) // _SECTOR
    for i in range(n_dir):
        sectors.append(bytes(dir_bytes[i * _SECTOR:(i + 1) * _SECTOR]))
        fat.append(first_dir + i + 1 if i < n_dir - 1 else _END)
    n_fat = 1
    while len(fat) + n_fat > n_fat * (_SECTOR // 4):
        n_fat += 1
    fat_sectors = list(range(len(sectors), len(sectors) + n_fat))
    fat += [_FATSECT] * n_fat
    fat += [_FREE] * (n_fat * (_SECTOR // 4) - len(fat))
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat)
    for i in range(n_fat):
        sectors.append(fat_bytes[i * _SECTOR:(i + 1) * _SECTOR])
    difat = fat_sectors + [_FREE] * (109 - n_fat)
    header = struct.pack("<8s16sHHHHH6sIIIIIIIII", bytes.fromhex("D0CF11E0A1B11AE1"), b"\0" * 16, 0x3E, 3,
                         0xFFFE, 9, 6, b"\0" * 6, 0, n_fat, first_dir, 0, 0x1000, _END, 0, _END, 0)
    header += struct.pack("<109I", *difat)
    with open(path, "wb") as fh:
        fh.write(header)
        for sector in sectors:
            fh.write(sector)


def _write_txm(path, volume, pixel_size_um):
    """A Zeiss-like .txm: ImageInfo streams and one float32 image per slice, stored upside down."""
    def padded(values, dtype):
        data = np.asarray(values, dtype=dtype).tobytes()
        return data + b"\0" * (4096 - len(data))

    nz, ny, nx = volume.shape
    streams = {
        "Version": padded([5.0], np.float32),
        "ImageInfo/ImageWidth": padded([nx], np.int32),
        "ImageInfo/ImageHeight": padded([ny], np.int32),
        "ImageInfo/ImagesTaken": padded([nz], np.uint32),
        "ImageInfo/NoOfImages": padded([nz], np.int32),
        "ImageInfo/PixelSize": padded([pixel_size_um], np.float32),
        "ImageInfo/DataType": padded([10], np.int32),  # XRM_FLOAT
    }
    for i, image in enumerate(volume):
        streams[f"ImageData{i // 100 + 1}/Image{i + 1}"] = np.ascontiguousarray(image[::-1], np.float32).tobytes()
    _write_ole2(path, streams)


def test_zeiss_txm_is_read_with_its_voxel_size(tmp_path):
    pytest.importorskip("txrm2tiff")
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(3, 32, 40)).astype(np.float32)  # 32x40 float32 images: 5120 bytes each
    path = tmp_path / "recon.txm"
    _write_txm(path, volume, 0.75)
    with open_volume(path) as src:
        assert src.format == "txm"
        assert src.shape == volume.shape
        assert src.voxel_size_um == pytest.approx(0.75)
        np.testing.assert_array_equal(src[:], volume)
        np.testing.assert_array_equal(src[1, 5:9, ::3], volume[1, 5:9, ::3])
    # The same orientation as txrm2tiff's own conversion to TIFF.
    from txrm2tiff import open_txrm

    with open(path, "rb") as fh:
        converted = open_txrm(fh, load_images=True, load_reference=False).get_output()
    np.testing.assert_array_equal(converted, volume)
