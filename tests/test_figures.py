"""Figures 1-9 from small synthetic results laid out as in docs/results.md (σ 3 and 9, as the test preset)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from scipy import ndimage
from skimage.metrics import structural_similarity

from resrecover import ResrecoverError
from resrecover.config import load_config, sigma_tag
from resrecover.figures import FIGURE_NAMES, METHOD_COLORS, METHOD_LABELS, METHOD_ORDER, make_figure
from resrecover.figures.data import result_key, table_key
from resrecover.figures.images import scale_bar_length_um
from resrecover.figures.plots import sphericity_box
from resrecover.evaluate.pores import SUMMARY_KEYS
from resrecover.io import write_volume

CONFIG_PATH = Path(__file__).parent / "config" / "test.yaml"
METHODS = ["deepnet", "srcnn", "rl"]
EVALUATED = [*METHODS, "fdk"]
REALIZATIONS = ["train", "alternate"]
SIGMAS = [3.0, 9.0]
SHAPE = (6, 48, 48)
# how much of the input blur each method leaves (a made-up ranking for the synthetic data)
RESIDUAL_BLUR = {"deepnet": 0.15, "srcnn": 0.4, "rl": 0.7, "fdk": 1.0}


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG_PATH)


def synthetic_foam(seed: int, voxel_um: float, radius_um: float) -> np.ndarray:
    """Material fraction: a cylinder of material (1) with spherical voids (0), air (0) outside."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE, dtype=float)
    cy, cx = (SHAPE[1] - 1) / 2, (SHAPE[2] - 1) / 2
    volume = (((y - cy) ** 2 + (x - cx) ** 2) <= (radius_um / voxel_um) ** 2).astype(np.float32)
    for _ in range(8):
        r = rng.uniform(1.5, 4.0)
        c = (rng.uniform(0, SHAPE[0]), cy + rng.uniform(-9, 9), cx + rng.uniform(-9, 9))
        volume[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= r**2] = 0.0
    return volume


def degrade(truth: np.ndarray, sigma_um: float, voxel_um: float, seed: int, noise: float = 0.04) -> np.ndarray:
    blurred = ndimage.gaussian_filter(truth, (0, sigma_um / voxel_um, sigma_um / voxel_um))
    return (blurred + np.random.default_rng(seed).normal(0, noise, truth.shape)).astype(np.float32)


def pore_table(seed: int, n: int, shrink: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    diameter = rng.uniform(8, 40, n) * (1 - 0.2 * shrink)
    sphericity = np.clip(rng.normal(0.99 - 0.05 * shrink, 0.01 + 0.03 * shrink, n), 0, 1)
    volume = np.pi / 6 * diameter**3
    return pd.DataFrame(
        {
            "label": np.arange(1, n + 1),
            "centroid_z_um": rng.uniform(0, 24, n),
            "centroid_y_um": rng.uniform(0, 192, n),
            "centroid_x_um": rng.uniform(0, 192, n),
            "volume_um3": volume,
            "diameter_um": diameter,
            "surface_um2": np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / np.maximum(sphericity, 1e-3),
            "sphericity": sphericity,
            "matched_gt_label": np.where(rng.random(n) < 0.9, np.arange(1, n + 1), 0),
        }
    )


def keyed(table: pd.DataFrame, method: str, realization: str, sigma_um: float) -> pd.DataFrame:
    """A pore table with the key columns the evaluation writes first."""
    return pd.concat([pd.DataFrame({"method": method, "realization": realization, "sigma_um": sigma_um},
                                   index=table.index), table], axis=1)


@pytest.fixture(scope="module")
def results(tmp_path_factory, config):
    """Volumes, maps, tables and pore tables of a tiny run, under the docs/results.md paths."""
    root = tmp_path_factory.mktemp("figures") / "results"
    voxel = config["voxel_size_um"]
    radius = config["phantom"]["cylinder_radius_um"]
    metrics, fits, best, summary, hist = [], [], [], [], []
    bins = np.arange(0, 50, 5.0)
    paths: dict[str, list[str]] = {"recon": [], "gt": [], "recovered": [], "maps": [], "pores": [], "gt_pores": []}

    for r_index, realization in enumerate(REALIZATIONS):
        truth = synthetic_foam(r_index + 1, voxel, radius)
        gt_path = root / "recon" / realization / "ground_truth.h5"
        # the attributes and key columns the workflow's steps write (docs/results.md)
        write_volume(gt_path, truth, voxel, realization=realization, sigma_um=0.0)
        paths["gt"].append(str(gt_path))
        gt_pores = keyed(pore_table(100 + r_index, 60, 0.0), "ground_truth", realization, np.nan)
        gt_pore_path = root / "pores" / "ground_truth" / f"{realization}.csv"
        gt_pore_path.parent.mkdir(parents=True, exist_ok=True)
        gt_pores.to_csv(gt_pore_path, index=False)
        paths["gt_pores"].append(str(gt_pore_path))
        gt_porosity = 0.2 + 0.01 * r_index
        summary.append(
            [
                "ground_truth",
                realization,
                np.nan,
                60,
                100.0,
                gt_porosity,
                0.0,
                gt_pores.sphericity.mean(),
                gt_pores.sphericity.std(),
                60,
                0,
                0,
                0,
                0,
                0,
            ]
        )
        counts, _ = np.histogram(gt_pores.diameter_um, bins)
        hist += [["ground_truth", realization, np.nan, a, b, c] for a, b, c in zip(bins[:-1], bins[1:], counts)]

        for sigma in [1.0, *SIGMAS]:
            recon = degrade(truth, sigma, voxel, seed=10 * r_index + int(sigma))
            path = root / "recon" / realization / f"sigma{sigma_tag(sigma)}.h5"
            write_volume(path, recon, voxel, realization=realization, sigma_um=sigma)
            paths["recon"].append(str(path))
            if sigma == 1.0:
                continue
            for m_index, method in enumerate(EVALUATED):
                residual = RESIDUAL_BLUR[method] * sigma
                volume = recon if method == "fdk" else degrade(truth, residual, voxel, seed=m_index + 7)
                if method != "fdk":
                    path = root / "recovered" / method / realization / f"sigma{sigma_tag(sigma)}.h5"
                    write_volume(path, volume, voxel, method=method, realization=realization, sigma_um=sigma)
                    paths["recovered"].append(str(path))
                mse = float(np.mean((volume - truth) ** 2))
                ssim = float(structural_similarity(truth, volume, data_range=1.0, win_size=5))
                metrics.append([method, realization, sigma, mse, 10 * np.log10(1 / mse), ssim])
                curve = []
                for blur in np.arange(0, 10.5, 1.0):
                    blurred = ndimage.gaussian_filter(truth, blur / voxel) if blur else truth
                    curve.append(float(np.mean((blurred - volume) ** 2)))
                    fits.append([method, realization, sigma, blur, curve[-1]])
                k = int(np.argmin(curve))
                best.append([method, realization, sigma, float(k), 2.3548 * k, curve[k]])
                shrink = RESIDUAL_BLUR[method] * sigma / 9
                pores = pore_table(1000 * r_index + 10 * m_index + int(sigma), int(60 * (1 - 0.4 * shrink)), shrink)
                pores = keyed(pores, method, realization, sigma)
                if method != "fdk":
                    pore_path = root / "pores" / method / realization / f"sigma{sigma_tag(sigma)}.csv"
                    pore_path.parent.mkdir(parents=True, exist_ok=True)
                    pores.to_csv(pore_path, index=False)
                    paths["pores"].append(str(pore_path))
                n_matched = int((pores.matched_gt_label > 0).sum())
                porosity = gt_porosity * (1 - 0.3 * shrink)
                summary.append(
                    [
                        method,
                        realization,
                        sigma,
                        len(pores),
                        100 * len(pores) / 60,
                        porosity,
                        100 * (porosity - gt_porosity) / gt_porosity,
                        pores.sphericity.mean(),
                        pores.sphericity.std(),
                        n_matched,
                        60 - n_matched,
                        len(pores) - n_matched,
                        0,
                        0,
                        0,
                    ]
                )
                counts, _ = np.histogram(pores.diameter_um, bins)
                hist += [[method, realization, sigma, a, b, c] for a, b, c in zip(bins[:-1], bins[1:], counts)]
                if realization == "alternate" and method != "fdk":
                    score_map = np.clip(1 - np.abs(volume - truth), 0, 1).astype(np.float32)
                    path = root / "maps" / "msssim" / method / "alternate" / f"sigma{sigma_tag(sigma)}.h5"
                    write_volume(path, score_map, voxel, msssim=float(score_map.mean()), method=method,
                                 realization=realization, sigma_um=sigma)
                    paths["maps"].append(str(path))

    tables = root / "tables"
    tables.mkdir(parents=True)
    frames = {
        "image_metrics": (metrics, ["method", "realization", "sigma_um", "mse", "psnr", "ssim"]),
        "gaussian_fit": (fits, ["method", "realization", "sigma_um", "blur_sigma_um", "mse"]),
        "gaussian_fit_best": (best, ["method", "realization", "sigma_um", "best_blur_sigma_um", "best_fwhm_um", "mse"]),
        "pores_summary": (
            summary,
            ["method", "realization", "sigma_um", *SUMMARY_KEYS],
        ),
        "pore_size_histogram": (hist, ["method", "realization", "sigma_um", "bin_start_um", "bin_end_um", "count"]),
    }
    for name, (rows, columns) in frames.items():
        pd.DataFrame(rows, columns=columns).to_csv(tables / f"{name}.csv", index=False)
        paths[name] = str(tables / f"{name}.csv")
    return root, paths


def figure_inputs(name: str, paths: dict, methods=METHODS) -> dict:
    """The named inputs of each rule of workflow/rules/figures.smk."""

    def keep(files, realization=None):
        out = []
        for f in files:
            if f.endswith(".csv"):
                method, entry_realization, _ = table_key(pd.read_csv(f), f)
            else:
                entry = result_key(f)
                method, entry_realization = entry.method, entry.realization
            if method in methods and (realization is None or entry_realization == realization):
                out.append(f)
        return out

    alternate_recon = [p for p in paths["recon"] if result_key(p, "fdk").realization == "alternate"
                       and result_key(p, "fdk").sigma_um != 1.0]
    return {
        "fig1_training_pairs": {"volumes": [p for p in paths["recon"] if "/train/" in p]},
        "fig2_deepnet_train_vs_alternate": {
            "image_metrics": paths["image_metrics"],
            "pores_summary": paths["pores_summary"],
            "volumes": [f for f in keep(paths["recovered"]) if result_key(f).method == "deepnet"],
            "ground_truth": paths["gt"],
        },
        "fig3_image_metrics": {"image_metrics": paths["image_metrics"]},
        "fig4_slice_grid": {
            "inputs": alternate_recon,
            "recovered": keep(paths["recovered"], "alternate"),
            "ground_truth": [p for p in paths["gt"] if "/alternate/" in p][0],
        },
        "fig5_pore_recovery": {"pores_summary": paths["pores_summary"]},
        "fig6_pore_size_histograms": {
            "histogram": paths["pore_size_histogram"],
            "pores_summary": paths["pores_summary"],
        },
        "fig7_sphericity": {
            "pores": keep(paths["pores"]),
            "ground_truth_pores": paths["gt_pores"],
            "pores_summary": paths["pores_summary"],
        },
        "fig8_msssim_maps": {"maps": keep(paths["maps"])},
        "fig9_gaussian_fit": {"gaussian_fit": paths["gaussian_fit"], "gaussian_fit_best": paths["gaussian_fit_best"]},
    }[name]


@pytest.fixture(scope="module")
def figures(results, config):
    """Every figure drawn once from the full synthetic run: name -> (Figure, png, pdf)."""
    root, paths = results
    out = {}
    for name in FIGURE_NAMES:
        png, pdf = root / "figures" / f"{name}.png", root / "figures" / f"{name}.pdf"
        fig = make_figure(name, figure_inputs(name, paths), png, pdf, config)
        out[name] = (fig, png, pdf)
    return out


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_each_figure_is_a_valid_png_and_pdf(figures, name):
    _, png, pdf = figures[name]
    assert png.stat().st_size > 5_000 and pdf.stat().st_size > 2_000
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    assert width > 400 and height > 250
    assert pixels.std() > 5  # not a blank canvas
    assert pdf.read_bytes().startswith(b"%PDF")
    assert not list(png.parent.glob(".*part*"))  # atomic: no temporary files left behind


def _artist_colors(artist) -> list[tuple[float, float, float]]:
    """The colours an artist is drawn with (line colour, face/edge colours), alpha dropped."""
    if hasattr(artist, "get_color") and not hasattr(artist, "get_facecolor"):
        return [to_rgb(artist.get_color())]
    colors = []
    if hasattr(artist, "get_facecolor"):
        face = np.atleast_2d(artist.get_facecolor())
        if getattr(artist, "get_fill", lambda: True)() and face.size and face[0][3] > 0:
            colors.append(tuple(face[0][:3]))
    if hasattr(artist, "get_edgecolor") and not colors:
        edge = np.atleast_2d(artist.get_edgecolor())
        if edge.size:
            colors.append(tuple(edge[0][:3]))
    return colors


def _method_artists(fig) -> dict[str, list]:
    found: dict[str, list] = {}
    for artist in fig.findobj(lambda a: (a.get_gid() or "").startswith("method:")):
        found.setdefault(artist.get_gid().split(":", 1)[1], []).append(artist)
    return found


def test_each_method_has_one_colour_across_figures(figures):
    seen_in: dict[str, set[str]] = {}
    for name, (fig, _, _) in figures.items():
        for method, artists in _method_artists(fig).items():
            seen_in.setdefault(method, set()).add(name)
            expected = to_rgb(METHOD_COLORS[method])
            for artist in artists:
                for color in _artist_colors(artist):
                    assert np.allclose(color, expected), (name, method, artist, color, expected)
    # every recovery method appears, in the same colour, in the line and bar figures
    for method in METHODS:
        assert {
            "fig3_image_metrics",
            "fig5_pore_recovery",
            "fig6_pore_size_histograms",
            "fig7_sphericity",
            "fig9_gaussian_fit",
        } <= seen_in[method], method
    assert "fig2_deepnet_train_vs_alternate" in seen_in["deepnet"]
    assert {"fig3_image_metrics", "fig5_pore_recovery", "fig9_gaussian_fit"} <= seen_in["fdk"]
    assert len({METHOD_COLORS[m] for m in METHOD_ORDER}) == len(METHOD_ORDER)
    assert set(METHOD_LABELS) == set(METHOD_ORDER)


def test_fig3_plots_the_table_values(figures, results):
    """The points of fig3 are the image_metrics.csv rows of the alternate realization."""
    _, paths = results
    table = pd.read_csv(paths["image_metrics"])
    fig = figures["fig3_image_metrics"][0]
    ssim_ax = fig.axes[2]
    for line in ssim_ax.get_lines():
        method = line.get_gid().split(":", 1)[1]
        rows = table[(table.method == method) & (table.realization == "alternate")].sort_values("sigma_um")
        assert np.allclose(line.get_xdata(), rows.sigma_um)
        assert np.allclose(line.get_ydata(), rows.ssim)
    assert {line.get_gid() for line in ssim_ax.get_lines()} == {f"method:{m}" for m in EVALUATED}


def test_fig9_drop_lines_sit_at_the_best_fit(figures, results):
    _, paths = results
    best = pd.read_csv(paths["gaussian_fit_best"])
    fig = figures["fig9_gaussian_fit"][0]
    panel = fig.axes[0]  # σ = 3 µm
    rows = best[(best.realization == "alternate") & (best.sigma_um == 3.0)]
    markers = [line for line in panel.get_lines() if len(line.get_xdata()) == 1]
    assert len(markers) == len(rows)
    for line in markers:
        method = line.get_gid().split(":", 1)[1]
        row = rows[rows.method == method].iloc[0]
        assert line.get_xdata()[0] == pytest.approx(row.best_blur_sigma_um)
        assert line.get_ydata()[0] == pytest.approx(row.mse)


def test_methods_absent_from_the_config_are_left_out(results, config, tmp_path):
    """A run with only SRCNN and RL: no DeepNet anywhere (even though the tables hold DeepNet rows)."""
    _, paths = results
    reduced = copy.deepcopy(config)
    reduced["methods"] = ["srcnn", "rl"]
    # the figures that read tables (which still hold DeepNet rows) and fig2, which is about DeepNet
    for name in [
        "fig2_deepnet_train_vs_alternate",
        "fig3_image_metrics",
        "fig5_pore_recovery",
        "fig6_pore_size_histograms",
        "fig9_gaussian_fit",
    ]:
        inputs = figure_inputs(name, paths, methods=["srcnn", "rl", "fdk", "ground_truth"])
        fig = make_figure(name, inputs, tmp_path / f"{name}.png", tmp_path / f"{name}.pdf", reduced)
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        methods = set(_method_artists(fig))
        assert "deepnet" not in methods, name
        labels = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
        if name not in ("fig2_deepnet_train_vs_alternate",):  # fig2 says DeepNet is absent
            assert "DeepNet" not in labels, name


def test_sigma_levels_come_from_the_data_and_config(results, config, tmp_path):
    """Only the configured σ are drawn: with σ = 9 alone, fig3 has one point per method."""
    _, paths = results
    only9 = copy.deepcopy(config)
    only9["scan"]["sigmas_um"] = [9]
    fig = make_figure(
        "fig3_image_metrics", figure_inputs("fig3_image_metrics", paths), tmp_path / "a.png", tmp_path / "a.pdf", only9
    )
    for line in fig.axes[0].get_lines():
        assert list(line.get_xdata()) == [9.0]


def test_result_keys_come_from_the_files_not_their_paths(tmp_path):
    """(method, realization, σ) as the writing step recorded it: HDF5 attributes, a table's key columns."""
    volume = np.zeros((2, 3, 3), np.float32)
    # a name that says nothing: the keys are in the file
    write_volume(tmp_path / "a.h5", volume, 4.0, method="srcnn", realization="alternate", sigma_um=9.0)
    entry = result_key(tmp_path / "a.h5")
    assert (entry.method, entry.realization, entry.sigma_um) == ("srcnn", "alternate", 9.0)
    write_volume(tmp_path / "b.h5", volume, 4.0, method="rl", realization="train", sigma_um=[2.5, 2.5, 2.5])
    assert result_key(tmp_path / "b.h5").sigma_um == 2.5  # Richardson-Lucy's per-axis σ
    # a reconstruction names no method: the caller gives its role
    write_volume(tmp_path / "c.h5", volume, 4.0, realization="train", sigma_um=3.0)
    entry = result_key(tmp_path / "c.h5", "fdk")
    assert (entry.method, entry.realization, entry.sigma_um) == ("fdk", "train", 3.0)
    write_volume(tmp_path / "d.h5", volume, 4.0, realization="alternate", sigma_um=0.0)
    entry = result_key(tmp_path / "d.h5", "ground_truth")
    assert (entry.method, entry.realization, entry.sigma_um) == ("ground_truth", "alternate", None)
    table = pd.DataFrame({"method": ["ground_truth"] * 2, "realization": "alternate", "sigma_um": np.nan, "label": [1, 2]})
    assert table_key(table, "t.csv") == ("ground_truth", "alternate", None)
    assert table_key(table.iloc[:0], "t.csv") is None  # no pores: nothing to draw
    with pytest.raises(ResrecoverError, match="2 volumes"):
        table_key(table.assign(method=["deepnet", "rl"]), "t.csv")


def test_small_helpers():
    assert scale_bar_length_um(512) == 100
    assert scale_bar_length_um(192) == 20
    stats = sphericity_box(np.array([0.9, 1.0, 0.95, np.nan]))
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(0.95)
    assert stats["q1"] == pytest.approx(0.925) and stats["q3"] == pytest.approx(0.975)


def test_unknown_figure_and_missing_table_are_one_line_errors(tmp_path):
    with pytest.raises(ResrecoverError, match="fig10_nothing"):
        make_figure("fig10_nothing", {}, tmp_path / "a.png", tmp_path / "a.pdf")
    bad = tmp_path / "image_metrics.csv"
    pd.DataFrame({"method": ["deepnet"], "sigma_um": [3]}).to_csv(bad, index=False)
    with pytest.raises(ResrecoverError, match="missing column"):
        make_figure("fig3_image_metrics", {"image_metrics": str(bad)}, tmp_path / "a.png", tmp_path / "a.pdf")
    assert not (tmp_path / "a.png").exists()


def test_captions_render_as_in_the_snakemake_report(config):
    """Each report caption renders with Jinja (as `snakemake --report` does) into clean reStructuredText."""
    from types import SimpleNamespace

    from docutils.core import publish_parts
    from jinja2 import Environment

    report = Path(__file__).parents[1] / "workflow" / "report"
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    for name in FIGURE_NAMES:
        text = (report / f"{name}.rst").read_text()
        assert "to be written" not in text
        rendered = env.from_string(text).render(snakemake=SimpleNamespace(config=config))
        assert "{{" not in rendered and "µm" in rendered
        html = publish_parts(rendered, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})
        assert len(html["body"]) > 200, name
