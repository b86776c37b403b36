"""The study summary table: joins the study's tables and checks the paper's ordering."""

import pandas as pd
import pytest

from resrecover import ResrecoverError
from resrecover.evaluate.summary import SUMMARY_COLUMNS, paper_ordering, summary_markdown, write_summary

METHODS = ["fdk", "rl", "srcnn", "deepnet"]


def _tables(tmp_path, ssim_deepnet=0.8, recovery_srcnn=70.0):
    keys = [(m, r, s) for m in METHODS for r in ("train", "alternate") for s in (3.0, 9.0)]
    ssim = {"fdk": 0.3, "rl": 0.5, "srcnn": 0.7, "deepnet": ssim_deepnet}
    recovery = {"fdk": 20.0, "rl": 40.0, "srcnn": recovery_srcnn, "deepnet": 90.0}

    def frame(**columns):
        base = pd.DataFrame(keys, columns=["method", "realization", "sigma_um"])
        for name, values in columns.items():
            base[name] = [values[m] if isinstance(values, dict) else values for m, _, _ in keys]
        return base

    paths = {
        "image_metrics": frame(mse=0.01, psnr=20.0, ssim=ssim),
        "pores_summary": frame(n_pores=100, recovery_pct=recovery, porosity=0.5, porosity_error_pct=-2.0,
                               sphericity_mean=0.9, sphericity_std=0.05, n_matched=80, n_missed=20, n_spurious=3),
        "gaussian_fit_best": frame(best_blur_sigma_um=2.0, best_fwhm_um=4.7, mse=0.01),
        "fsc_resolution": frame(fsc_threshold=1 / 7, resolution_um=8.0),
    }
    out = {}
    for name, df in paths.items():
        out[name] = tmp_path / f"{name}.csv"
        df.to_csv(out[name], index=False)
    return out


def test_summary_joins_the_tables_of_one_realization(tmp_path):
    paths = _tables(tmp_path)
    summary = write_summary(**paths, realization="alternate", csv_out=tmp_path / "s.csv",
                            markdown_out=tmp_path / "s.md")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == len(METHODS) * 2  # one realization, two σ
    # σ first, then the paper's order, the baseline after it
    assert list(summary.method[:4]) == ["deepnet", "srcnn", "rl", "fdk"]
    assert summary.loc[0, "recovery_pct"] == 90.0 and summary.loc[0, "fsc_resolution_um"] == 8.0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), summary)
    markdown = (tmp_path / "s.md").read_text().splitlines()
    assert len(markdown) == 2 + len(summary) + 2 and markdown[2].startswith("| deepnet | 3 | 0.800 |")


def test_paper_ordering_is_checked_on_both_measures(tmp_path):
    paths = _tables(tmp_path)
    summary = write_summary(**paths, realization="alternate", csv_out=tmp_path / "a.csv", markdown_out=tmp_path / "a.md")
    assert paper_ordering(summary, 9) == {"recovery_pct": True, "ssim": True}
    worse = _tables(tmp_path, ssim_deepnet=0.6, recovery_srcnn=95.0)
    summary = write_summary(**worse, realization="alternate", csv_out=tmp_path / "b.csv", markdown_out=tmp_path / "b.md")
    assert paper_ordering(summary, 9) == {"recovery_pct": False, "ssim": False}
    assert "–" not in summary_markdown(summary)
    summary.loc[0, "fsc_resolution_um"] = float("nan")  # an FSC that never crossed its threshold
    assert summary_markdown(summary).splitlines()[2].endswith("| ≤ Nyquist |")


def test_summary_errors_name_the_file(tmp_path):
    paths = _tables(tmp_path)
    with pytest.raises(ResrecoverError, match="no rows of realization 'other'"):
        write_summary(**paths, realization="other", csv_out=tmp_path / "c.csv", markdown_out=tmp_path / "c.md")
    paths["fsc_resolution"] = tmp_path / "missing.csv"
    with pytest.raises(ResrecoverError, match="missing.csv: table not found"):
        write_summary(**paths, realization="alternate", csv_out=tmp_path / "d.csv", markdown_out=tmp_path / "d.md")
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "d.csv").exists()
