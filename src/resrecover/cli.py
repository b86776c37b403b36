"""The ``resrecover`` command line: the workflow's steps by hand, on your own volumes.

Every subcommand prints a one-line error (naming the file or option and what was expected) when the
input is wrong, and writes the full traceback to ``--log`` (default: ``resrecover-error.log`` in the
temporary directory) instead of the terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

from . import ResrecoverError, __version__
from .methods.registry import NETWORKS


def _cmd_check_config(args) -> None:
    from .config import load_config

    config = load_config(args.config)
    print(f"{args.config}: valid ({config['volume_shape']} voxels of {config['voxel_size_um']} µm)")


def _cmd_simulate(args) -> None:
    from .ct.simulate import simulate_volume_file

    kwargs = {
        k: v
        for k, v in dict(
            n_projections=args.n_projections,
            photons_per_pixel=args.photons,
            source_to_object_um=args.source_to_object_um,
            source_to_detector_um=args.source_to_detector_um,
            attenuation_per_um=args.attenuation_per_um,
            voxel_size_um=args.voxel_um,
        ).items()
        if v is not None
    }
    simulate_volume_file(
        args.volume, args.out, sigma_um=args.sigma_um, backend=args.backend, seed=args.seed, **kwargs
    )
    print(f"wrote {args.out}")


def _cmd_train_registered(args, config) -> None:
    """``train METHOD LOW HIGH --registration reg.json``: train on the overlap of a registered scan pair."""
    from .ownscan.training import open_registered_pair, registered_training_pair, train_pair

    with open_registered_pair(args.lres, args.hres, args.registration) as (low, high, registration):
        lres, hres, box = registered_training_pair(low, high, registration)
    print(f"training pair: the {lres.shape} high-res voxels of the overlap {box} (high-res voxels), "
          f"the low-res scan resampled onto them ({registration.low_voxel_um:g} -> {registration.high_voxel_um:g} µm)")
    out = Path(args.out)
    train_pair(args.method, lres, hres, config, out, seed=args.seed, iterations=args.iterations)
    print(f"wrote {out / 'model.safetensors'} and {out / 'model.json'}")


def _cmd_train(args) -> None:
    from .config import load_config
    from .io import read_volume
    from .masks import fov_mask
    from .methods.device import acquire_device
    from .methods.training import train_model

    config = load_config(args.config)
    if args.registration:
        return _cmd_train_registered(args, config)
    if args.iterations:
        config[args.method]["iterations"] = args.iterations
    lres, lres_attrs = read_volume(args.lres)
    hres, hres_attrs = read_volume(args.hres)
    lvs, hvs = lres_attrs.get("voxel_size_um"), hres_attrs.get("voxel_size_um")
    if lvs is not None and hvs is not None and abs(float(lvs) - float(hvs)) > 1e-6 * float(hvs):
        raise ResrecoverError(
            f"{args.lres}: voxel size {float(lvs):g} µm differs from {args.hres} ({float(hvs):g} µm); "
            "resample the low-res volume onto the high-res grid first (resrecover register --low-on-high)"
        )
    if lres.shape != hres.shape:
        raise ResrecoverError(
            f"{args.lres}: shape {lres.shape} differs from {args.hres} {hres.shape}; register the pair first"
        )
    out = Path(args.out)
    mask = fov_mask(config, lres.shape) if args.fov_mask else None
    with acquire_device() as device:
        train_model(
            args.method,
            lres,
            hres,
            config,
            out_weights=out / "model.safetensors",
            out_settings=out / "model.json",
            out_log=out / "train_log.csv",
            checkpoint_dir=out / "checkpoints",
            seed=args.seed,
            device=device,
            mask=mask,
        )
    print(f"wrote {out / 'model.safetensors'} and {out / 'model.json'}")


def _cmd_recover(args) -> None:
    import shutil

    from .config import load_config
    from .io import check_free_disk
    from .io.atomic import format_bytes
    from .io.sinks import output_format
    from .ownscan.recovery import plan_large_fov, recover_large_fov

    config = load_config(args.config)
    model = Path(args.model)
    weights = model if model.suffix == ".safetensors" else model / "model.safetensors"
    settings = weights.with_suffix(".json")
    output_format(args.out)  # refuse an unknown suffix before any work
    plan = plan_large_fov(args.volume, args.registration, args.voxel_um, args.high_voxel_um, args.roi,
                          out_path=args.out)
    folder = Path(args.out).resolve().parent
    while not folder.exists():
        folder = folder.parent
    print(f"{plan.describe()}; {format_bytes(shutil.disk_usage(folder).free)} free on {folder}", flush=True)
    check_free_disk(args.out, plan.nbytes)
    recover_large_fov(
        weights, settings, args.volume, args.out, registration=args.registration, low_voxel_um=args.voxel_um,
        high_voxel_um=args.high_voxel_um, roi=args.roi, inference_config=config["inference"],
        max_memory_gb=args.max_memory_gb,
    )
    print(f"wrote {args.out}")


def _cmd_register(args) -> None:
    from .ownscan.registration import register_files

    result = register_files(
        args.low,
        args.high,
        args.out,
        low_voxel_um=args.low_voxel_um,
        high_voxel_um=args.high_voxel_um,
        offset_um=args.offset_um,
        search=not args.no_search,
        min_peak=args.min_peak,
        out_low_on_high=args.low_on_high,
    )
    print(result.report)
    print(f"wrote {args.out}")


def _cmd_deconvolve(args) -> None:
    from .methods.rl import richardson_lucy_file

    richardson_lucy_file(args.volume, args.out, sigma_um=args.sigma_um, iterations=args.iterations, pad_um=0)
    print(f"wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resrecover", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"resrecover {__version__}")
    p.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "resrecover-error.log"),
                   help="file that receives the traceback of an unexpected error (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check-config", help="validate a config file against the schema")
    c.add_argument("config")
    c.set_defaults(func=_cmd_check_config)

    s = sub.add_parser("simulate", help="degrade your own attenuation volume with a simulated cone-beam scan + FDK")
    s.add_argument("volume", help="HDF5 (dataset 'volume') or TIFF stack of the object")
    s.add_argument("--sigma-um", type=float, required=True, help="object-plane Gaussian blur σ (µm)")
    s.add_argument("--out", required=True, help="output HDF5 reconstruction")
    s.add_argument("--voxel-um", type=float, help="voxel size (µm); required when the file carries none (TIFF)")
    s.add_argument("--n-projections", type=int)
    s.add_argument("--photons", type=float, help="incident photons per detector pixel (I0)")
    s.add_argument("--source-to-object-um", type=float)
    s.add_argument("--source-to-detector-um", type=float)
    s.add_argument("--attenuation-per-um", type=float)
    s.add_argument("--backend", choices=["auto", "rtk", "astra"], default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_simulate)

    t = sub.add_parser("train", help="train DeepNet or SRCNN-3D on a registered low/high-resolution pair")
    t.add_argument("method", choices=list(NETWORKS))
    t.add_argument("lres", help="low-resolution input volume (HDF5) on the high-res grid; with --registration, "
                                "the low-res scan itself (TIFF, HDF5, Zarr, .npy, .txm)")
    t.add_argument("hres", help="high-resolution target volume (HDF5; with --registration any format)")
    t.add_argument("--registration", help="registration JSON (resrecover register): train on the overlap, the "
                                          "low-res scan resampled onto the high-res voxels")
    t.add_argument("--iterations", type=int, help="training iterations (default: the config's)")
    t.add_argument("--config", default="config/config.yaml", help="config with the training settings")
    t.add_argument("--out", required=True, help="model folder (model.safetensors, model.json, train_log.csv)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--fov-mask", action="store_true", help="restrict the loss to the configured CT field of view")
    t.set_defaults(func=_cmd_train)

    r = sub.add_parser("recover", help="apply a trained model to a volume or a whole large FOV (tiled, out of core)")
    r.add_argument("model", help="model folder or model.safetensors (model.json beside it)")
    r.add_argument("volume", help="input volume (TIFF file/folder, HDF5 file[.h5:/dataset], Zarr, .npy, Zeiss .txm); "
                                  "with --registration the low-res large-FOV scan")
    r.add_argument("--out", required=True, help="output volume: .h5, .zarr, .tif or .npy")
    r.add_argument("--config", default="config/config.yaml", help="config with the inference settings")
    r.add_argument("--registration", help="registration JSON: recover the whole low-res FOV on the high-res grid")
    r.add_argument("--voxel-um", type=float, help="the input's voxel size (µm) when the file carries none")
    r.add_argument("--high-voxel-um", type=float, help="upsample onto this voxel size (µm) without a registration")
    r.add_argument("--roi", help="region of interest z0:z1,y0:y1,x0:x1 in output voxels (default: everything)")
    r.add_argument("--max-memory-gb", type=float, default=None, help="RAM budget of the recovery (GB)")
    r.set_defaults(func=_cmd_recover)

    g = sub.add_parser("register", help="register a low-res large-FOV volume with a high-res interior scan")
    g.add_argument("low", help="low-resolution volume (TIFF file/folder, HDF5 file[.h5:/dataset], Zarr, .npy, Zeiss .txm)")
    g.add_argument("high", help="high-resolution volume inside it (same formats)")
    g.add_argument("--low-voxel-um", type=float, help="low-res voxel size (µm); required when the file carries none")
    g.add_argument("--high-voxel-um", type=float, help="high-res voxel size (µm); required when the file carries none")
    g.add_argument("--offset-um", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="approximate position of the high-res volume's corner in the low-res volume (stage coordinates)")
    g.add_argument("--no-search", action="store_true", help="trust --offset-um for the coarse placement")
    g.add_argument("--min-peak", type=float, default=0.5, help="refuse a match whose correlation is below this")
    g.add_argument("--low-on-high", help="also write the low-res volume resampled onto the high-res grid (HDF5)")
    g.add_argument("--out", required=True, help="registration JSON")
    g.set_defaults(func=_cmd_register)

    d = sub.add_parser("deconvolve", help="Richardson-Lucy deconvolution with a Gaussian PSF")
    d.add_argument("volume")
    d.add_argument("--sigma-um", type=float, required=True)
    d.add_argument("--iterations", type=int, default=30)
    d.add_argument("--out", required=True)
    d.set_defaults(func=_cmd_deconvolve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except ResrecoverError as exc:
        print(f"resrecover: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resrecover: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: one line here, the traceback in the log
        with open(args.log, "a") as fh:
            traceback.print_exc(file=fh)
        print(f"resrecover: unexpected error: {type(exc).__name__}: {exc} (traceback in {args.log})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
