"""The spurious-pore classifier as the workflow runs it: fit where the truth is known, flag elsewhere.

Three rule entry points (workflow/rules/trust.smk):

- :func:`fit_trust_model_from_files` (rule ``trust_model``): one :class:`~.score.TrustModel` per
  method, fitted on the per-pore tables of the realizations named in ``trust.classifier.fit_realizations``
  (``train``: never ``alternate``, which only reports), pooled over the trust σ levels (a dozen
  spurious pores per level is too few to fit on alone); saved as JSON beside the trust maps.
- :func:`flag_pores_from_files` (rule ``flag_pores``): ``p_spurious`` of every pore of a volume, its
  conformal p-value against the *same σ's* matched pores of the fitting realization, and the
  Benjamini-Hochberg flag list at ``trust.classifier.fdr`` (:mod:`.conformal`).
- :func:`classifier_rows` and :func:`classifier_curves` (rule ``trust_validation``): on a realization
  with ground truth, ROC AUC with bootstrap intervals (score and size alone, and their
  difference), expected calibration error, achieved FDR and power, and the AUC with each feature
  dropped; ROC curves with bootstrap bands and the reliability table for fig10.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_csv
from .conformal import fdr_and_power, flag_spurious
from .maps import TrustError
from .score import (
    auc_difference_bootstrap,
    expected_calibration_error,
    fit_trust_model,
    load_trust_model,
    reliability_table,
    roc_auc_bootstrap,
    TrustModel,
    save_trust_model,
    spurious_labels,
)
from .validate import _row, labelled_pores, roc_auc

log = logging.getLogger(__name__)

#: the realization the classifier reports on and is never fitted or calibrated on
REPORTING_REALIZATION = "alternate"
#: fewest labelled spurious pores a model is fitted on (the study's and an own-scan pair's). Below it
#: the penalty cannot be chosen (each cross-validation fold needs spurious pores to score) and the
#: weights would be noise; the model is then a constant (:func:`unfitted_model`), which ranks no pore
#: and flags none. The FDR guarantee does not need a good model (any score the calibration pores did
#: not shape gives valid conformal p-values): this floor is about power.
MIN_SPURIOUS_PORES = 5
#: columns of results/tables/trust_roc.csv
ROC_COLUMNS = ["method", "sigma_um", "score", "fpr", "tpr", "tpr_low", "tpr_high"]
#: columns of results/tables/trust_reliability.csv
RELIABILITY_COLUMNS = ["method", "sigma_um", "bin", "p_mean", "observed", "n"]
#: false-positive rates at which the ROC curves and their bootstrap bands are tabulated
FPR_GRID = np.linspace(0.0, 1.0, 51)


def _read_tables(paths, what: str) -> list[pd.DataFrame]:
    tables = []
    for path in paths:
        table = pd.read_csv(path)
        for column in ("method", "realization", "sigma_um", "matched_gt_label"):
            if column not in table.columns:
                raise TrustError(f"{path}: no column '{column}'; expected a per-pore trust table ({what})")
        if (table["realization"] == REPORTING_REALIZATION).any():
            raise TrustError(f"{path}: pores of '{REPORTING_REALIZATION}'; expected none ({what}: alternate only reports)")
        tables.append(labelled_pores(table))  # a pore cut by an end of the truth is neither kind
    return tables


def fit_trust_model_from_files(pore_paths, output_path: str | Path, config: dict):
    """Fit one method's trust model on its per-pore tables (results/trust/pores/...); write JSON.

    The tables' ``method``, ``realization`` and ``sigma_um`` columns are recorded in the model's
    ``training`` list; a table of ``alternate`` is refused.
    """
    block = config["trust"]["classifier"]
    tables = _read_tables(pore_paths, "fitting")
    methods = {str(m) for t in tables for m in t["method"].unique()}
    if len(methods) > 1:
        raise TrustError(f"{', '.join(map(str, pore_paths))}: methods {sorted(methods)}; expected one method's tables")
    info = [
        {"realization": str(t["realization"].iloc[0]) if len(t) else "", "method": next(iter(methods), ""),
         "sigma_um": float(t["sigma_um"].iloc[0]) if len(t) else float("nan"), "file": str(p)}
        for t, p in zip(tables, pore_paths)
    ]
    labels = np.concatenate([spurious_labels(t) for t in tables]) if tables else np.zeros(0, bool)
    if labels.size and MIN_SPURIOUS_PORES <= labels.sum() < labels.size:
        features = list(block["features"])
        l2, cv = choose_l2(tables, features, block["l2_candidates"], default=float(block["l2"]))
        model = fit_trust_model(tables, features=features, training_info=info, l2=l2)
        if cv:
            model.notes.append(f"l2 = {l2:g} chosen by leave-one-table-out cross-validation on the fitting pores "
                               f"(mean held-out ROC AUC by l2: {', '.join(f'{k:g}: {v:.3f}' for k, v in cv.items())})")
    else:  # one kind only (unfitted_model's own note), or too few spurious pores
        note = (f"not fitted: {int(labels.sum())} spurious of {labels.size} training pores; at least "
                f"{MIN_SPURIOUS_PORES} spurious pores are needed to fit on, so every pore gets the training rate "
                "and nothing is flagged") if 0 < labels.sum() < labels.size else None
        model = unfitted_model(tables, info, int(labels.sum()), labels.size, note=note)
    save_trust_model(model, output_path)
    log.info("%s: fitted on %d pores (%d spurious) of %s; features %s, coefficients %s", output_path,
             labels.size, int(labels.sum()),
             ", ".join(f"{i['realization']} σ {i['sigma_um']:g}" for i in info), model.features,
             np.round(model.coef, 3).tolist())
    return model


def choose_l2(tables, features, candidates, default: float) -> tuple[float, dict]:
    """The L2 penalty of ``candidates`` with the best held-out ROC AUC, leaving out one fitting table
    (one σ of the fitting realization) at a time; ``(default, {})`` with fewer than 2 candidates or
    tables. Ties go to the larger penalty (the simpler model). Only fitting pores are used: the
    choice is made where the labels are the training's own, never on the reporting realization.
    """
    if len(candidates) < 2 or len(tables) < 2:
        return default, {}
    held_out = {}
    for l2 in sorted(float(c) for c in candidates):
        aucs = []
        for k, table in enumerate(tables):
            rest = tables[:k] + tables[k + 1:]
            y_rest = np.concatenate([spurious_labels(t) for t in rest])
            y = spurious_labels(table)
            if not 0 < y_rest.sum() < y_rest.size or not 0 < y.sum() < y.size:
                continue  # a fold without both kinds of pore has nothing to fit or score
            model = fit_trust_model(rest, features=features, l2=l2, calibration_frames=rest)
            aucs.append(roc_auc(model.p_spurious(table), y))
        held_out[l2] = float(np.mean(aucs)) if aucs else float("nan")
    finite = {k: v for k, v in held_out.items() if np.isfinite(v)}
    if not finite:
        return default, held_out
    best = max(finite.values())
    return max(k for k, v in finite.items() if v == best), held_out


def unfitted_model(tables, info, n_spurious: int, n: int, note: str | None = None) -> TrustModel:
    """A constant model for training pores that are all real (or all spurious): nothing to separate.

    Every pore gets the smoothed training rate (n_spurious + ½) / (n + 1) as ``p_spurious``, so its
    conformal p-values are ~uniform and the flag list stays empty; a note and a warning say why. The
    workflow goes on (a network that makes no spurious pore on train is no error). ``note``, when
    given, replaces the default note (and is the warning's text): a caller with its own reason.
    """
    rate = (n_spurious + 0.5) / (n + 1.0)
    note = note or (f"not fitted: {n_spurious} spurious of {n} training pores; expected both kinds, so every pore "
                    f"gets the training rate {rate:.3g}")
    log.warning("trust model: %s", note)
    one = np.ones(1)
    real = [t[~spurious_labels(t)] for t in tables]
    model = TrustModel(features=["diameter_um"], mean=0 * one, scale=one, coef=0 * one,
                       intercept=float(np.log(rate / (1.0 - rate))), impute=0 * one,
                       calibration_scores=np.zeros(0), training=[dict(i, role="fit") for i in info], notes=[note])
    n_real = sum(len(r) for r in real)
    model.calibration_scores = np.full(n_real, rate) if n_real else np.array([rate])
    return model


def calibrated_model(model, calibration: pd.DataFrame):
    """``model`` with its conformal calibration scores taken from ``calibration``'s matched pores."""
    real = calibration[~spurious_labels(calibration)]
    if real.empty:
        log.warning("calibration table: no matched pore at this σ; the model's own calibration scores are used")
        return model
    return dataclasses.replace(model, calibration_scores=np.sort(model.p_spurious(real)))


def flag_pores_from_files(pores_path, model_path, calibration_path, output_path, config: dict) -> pd.DataFrame:
    """Write the per-pore table with ``p_spurious``, ``conformal_p`` and ``flagged`` added.

    ``calibration_path``: the fitting realization's per-pore table at the same method and σ, whose
    matched pores calibrate the conformal p-values (blur changes what a real pore looks like).
    """
    model = load_trust_model(model_path)
    (calibration,) = _read_tables([calibration_path], "calibration")
    table = pd.read_csv(pores_path)
    out = flag_spurious(calibrated_model(model, calibration), table, alpha=float(config["trust"]["classifier"]["fdr"]))
    atomic_write_csv(out, output_path)
    log.info("%s: %d pores, median p_spurious %.3g, %d flagged at FDR %g", output_path, len(out),
             float(out["p_spurious"].median()) if len(out) else float("nan"), int(out["flagged"].sum()),
             float(config["trust"]["classifier"]["fdr"]))
    return out


def classifier_rows(scored: pd.DataFrame, training: list[pd.DataFrame], model: TrustModel | None, config: dict,
                    method: str, realization: str, sigma_um: float) -> list[dict]:
    """trust_validation.csv rows of one scored volume (``flag_pores``' table) against its ground truth.

    Quantities (``map`` = the score): ``roc_auc_spurious`` with ``roc_auc_ci_low`` / ``roc_auc_ci_high``
    (stratified bootstrap, ``trust.classifier.bootstrap`` resamples, 95%) for ``p_spurious`` and
    ``size_baseline`` (−diameter); ``roc_auc_gain_over_size`` (paired) with its interval;
    ``expected_calibration_error``; ``fdr_setting``, ``fdr_achieved``, ``power``, ``n_flagged``;
    ``roc_auc_drop_one`` (``map`` = one of ``model``'s features, left out of a refit on ``training``
    with ``model``'s penalty; none without a model or for a constant one). A constant ``p_spurious``
    (a model not fitted, :data:`MIN_SPURIOUS_PORES`) ranks nothing: its AUC and gain rows are NaN.
    """
    block = config["trust"]["classifier"]
    n_boot = int(block["bootstrap"])
    scored = labelled_pores(scored)
    training = [labelled_pores(t) for t in training]
    y = spurious_labels(scored)
    n = len(scored)
    if y.sum() == 0 or y.all():
        return [_row(method, realization, sigma_um, "spurious_pores_scored", "p_spurious", float(y.sum()), n)]
    p = scored["p_spurious"].to_numpy(dtype=np.float64)
    smallness = -scored["diameter_um"].to_numpy(dtype=np.float64)
    ranks = ranks_pores(p)
    nan = float("nan")
    rows = []
    for name, score in (("p_spurious", p), ("size_baseline", smallness)):
        auc, lo, hi = roc_auc_bootstrap(score, y, n_boot=n_boot) if name != "p_spurious" or ranks else (nan,) * 3
        # size_baseline's AUC itself is already a row of validate.pore_auc_rows
        quantities = (("roc_auc_spurious", auc),) if name == "p_spurious" else ()
        rows += [_row(method, realization, sigma_um, q, name, v, n)
                 for q, v in (*quantities, ("roc_auc_ci_low", lo), ("roc_auc_ci_high", hi))]
    gain, lo, hi = auc_difference_bootstrap(p, smallness, y, n_boot=n_boot) if ranks else (nan,) * 3
    rows += [_row(method, realization, sigma_um, q, "p_spurious", v, n)
             for q, v in (("roc_auc_gain_over_size", gain), ("roc_auc_gain_ci_low", lo), ("roc_auc_gain_ci_high", hi))]
    fdr, power, n_flagged = fdr_and_power(scored["flagged"].to_numpy(dtype=bool), y)
    rows += [
        _row(method, realization, sigma_um, "expected_calibration_error", "p_spurious",
             expected_calibration_error(p, y), n),
        _row(method, realization, sigma_um, "fdr_setting", "flagged", float(block["fdr"]), n),
        _row(method, realization, sigma_um, "fdr_achieved", "flagged", fdr, n_flagged),
        _row(method, realization, sigma_um, "power", "flagged", power, int(y.sum())),
        _row(method, realization, sigma_um, "n_flagged", "flagged", float(n_flagged), n),
    ]
    if model is None or not training or not ranks:
        return rows  # nothing to refit (no model, or unfitted_model's constant one)
    # the model's own features (those NaN or constant in training were dropped) each left out in turn,
    # with its penalty; calibration is not used here, naming its frames keeps fit_trust_model from warning
    for dropped in model.features:
        kept = [f for f in model.features if f != dropped]
        if not kept:
            continue
        refit = fit_trust_model(training, features=kept, l2=model.l2, calibration_frames=training)
        rows.append(_row(method, realization, sigma_um, "roc_auc_drop_one", dropped,
                         roc_auc(refit.p_spurious(scored), y), n))
    return rows


def ranks_pores(p_spurious: np.ndarray) -> bool:
    """Whether a model's scores rank the pores at all: :func:`unfitted_model`'s constant does not, and
    its ROC AUC (0.5 by ties) would read as a measured chance-level model."""
    finite = p_spurious[np.isfinite(p_spurious)]
    return finite.size > 0 and bool(np.ptp(finite) > 0)


def roc_band(score, y, n_boot: int, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """ROC curve on :data:`FPR_GRID` (``fpr``, ``tpr``) with a stratified-bootstrap band of the TPR."""
    score = np.asarray(score, dtype=np.float64)
    y = np.asarray(y, dtype=bool)

    def curve(s, t):
        # the ROC's TPR at each grid FPR: ties get the mid-rank (interpolated) curve
        order = np.argsort(-s, kind="mergesort")
        t = t[order]
        tpr = np.concatenate([[0.0], np.cumsum(t) / max(t.sum(), 1)])
        fpr = np.concatenate([[0.0], np.cumsum(~t) / max((~t).sum(), 1)])
        return np.interp(FPR_GRID, fpr, tpr)

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    samples = np.empty((n_boot, FPR_GRID.size))
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        samples[b] = curve(score[idx], y[idx])
    tail = (1.0 - level) / 2.0
    return pd.DataFrame({"fpr": FPR_GRID, "tpr": curve(score, y),
                         "tpr_low": np.quantile(samples, tail, axis=0) if n_boot else np.nan,
                         "tpr_high": np.quantile(samples, 1.0 - tail, axis=0) if n_boot else np.nan})


def classifier_curves(scored: pd.DataFrame, config: dict, method: str, sigma_um: float):
    """(ROC rows, reliability rows) of one scored volume for results/tables/trust_roc.csv and
    trust_reliability.csv (columns :data:`ROC_COLUMNS`, :data:`RELIABILITY_COLUMNS`)."""
    scored = labelled_pores(scored)
    y = spurious_labels(scored)
    if y.sum() == 0 or y.all():
        return pd.DataFrame(columns=ROC_COLUMNS), pd.DataFrame(columns=RELIABILITY_COLUMNS)
    n_boot = int(config["trust"]["classifier"]["bootstrap"])
    rocs = []
    for name, score in (("p_spurious", scored["p_spurious"]), ("size_baseline", -scored["diameter_um"])):
        if name == "p_spurious" and not ranks_pores(score.to_numpy(dtype=np.float64)):
            continue
        band = roc_band(score.to_numpy(dtype=np.float64), y, n_boot)
        rocs.append(band.assign(method=method, sigma_um=float(sigma_um), score=name)[ROC_COLUMNS])
    reliability = reliability_table(scored["p_spurious"].to_numpy(dtype=np.float64), y)
    reliability = reliability.assign(method=method, sigma_um=float(sigma_um))[RELIABILITY_COLUMNS]
    return pd.concat(rocs, ignore_index=True), reliability
