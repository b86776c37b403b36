"""Which pores to flag as spurious, with a false-discovery-rate guarantee: conformal outlier testing.

Following Bates, Candès, Lei, Romano & Sesia, "Testing for outliers with conformal p-values"
(Ann. Statist. 51(1), 2023): each pore of a scan is tested against the null "this pore is real",
with the trust model's P(spurious) as the score (larger = more outlying). Its marginal conformal
p-value ranks the score among the scores of real pores held out for calibration; the p-values of a
scan's pores are positively dependent (PRDS, as the paper shows), so the Benjamini-Hochberg procedure
on them keeps the false discovery rate (real pores among the flagged) at most ``alpha``.

The guarantee needs the calibration pores to be exchangeable with the scan's real pores: drawn
like them, and scored by a model that saw neither. Calibration pores the model was fitted on score
lower than fresh real pores would (overfitting), which makes the p-values too small and the FDR
too high; hence :func:`.score.fit_trust_model` takes ``calibration_frames`` from another
realization and notes when it had to fall back on the fitting frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .maps import TrustError


def conformal_p_values(calibration_scores, test_scores) -> np.ndarray:
    """Marginal conformal p-values: p = (1 + #{calibration ≥ s}) / (n_cal + 1) for each test score s.

    Larger scores are more outlying. Ties count against the test point (≥), which keeps the
    p-value valid (super-uniform under the null) for discrete scores too. Values in
    [1 / (n_cal + 1), 1].
    """
    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64).ravel())
    test = np.asarray(test_scores, dtype=np.float64)
    if cal.size == 0 or not np.isfinite(cal).all():
        raise TrustError(f"calibration_scores: {cal.size} values, some not finite; expected ≥ 1 finite score")
    if not np.isfinite(test).all():
        raise TrustError("test_scores: NaN or infinite values; expected finite scores")
    at_least = cal.size - np.searchsorted(cal, test, side="left")
    return (1.0 + at_least) / (cal.size + 1.0)


def benjamini_hochberg(p_values, alpha: float) -> np.ndarray:
    """Benjamini-Hochberg step-up rejections at FDR level ``alpha`` (bool, in the input's order).

    With the m p-values sorted, reject the k smallest for the largest k with p_(k) ≤ k·alpha/m
    (even where a smaller p_(j) is above its own line j·alpha/m: the procedure steps up).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if not 0 < alpha < 1:
        raise TrustError(f"alpha = {alpha}; expected a false discovery rate in (0, 1)")
    if not (np.isfinite(p) & (p >= 0) & (p <= 1)).all():
        raise TrustError("p_values: values outside [0, 1] or NaN; expected p-values")
    flat = p.ravel()
    m = flat.size
    reject = np.zeros(m, dtype=bool)
    if m == 0:
        return reject.reshape(p.shape)
    order = np.argsort(flat, kind="stable")
    below = flat[order] <= alpha * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.flatnonzero(below)[-1]) + 1
        reject[order[:k]] = True
    return reject.reshape(p.shape)


def flag_spurious(model, df: pd.DataFrame, alpha: float = 0.1) -> pd.DataFrame:
    """A copy of pore table ``df`` with ``p_spurious``, ``conformal_p`` and ``flagged`` added.

    ``flagged`` pores are the Benjamini-Hochberg rejections of "this pore is real" at level
    ``alpha`` over the table's pores, using the model's ``calibration_scores`` (P(spurious) of
    matched calibration pores). The expected fraction of real pores among the flagged is at most
    ``alpha`` when the calibration pores are exchangeable with this table's real pores: same kind
    of sample, method and blur, and not pores the model was fitted on (see the module docstring).
    """
    out = df.copy()
    score = model.p_spurious(df)
    out["p_spurious"] = score
    out["conformal_p"] = conformal_p_values(model.calibration_scores, score)
    out["flagged"] = benjamini_hochberg(out["conformal_p"].to_numpy(), alpha)
    return out


def fdr_and_power(flagged, spurious) -> tuple[float, float, int]:
    """False discovery proportion, power and number flagged of a flagging against the truth.

    fdr = real pores flagged / pores flagged (0 when none is flagged, the convention of the FDR's
    definition); power = spurious pores flagged / spurious pores (NaN when there are none).
    """
    flagged = np.asarray(flagged, dtype=bool).ravel()
    spurious = np.asarray(spurious, dtype=bool).ravel()
    if flagged.shape != spurious.shape:
        raise TrustError(f"{flagged.size} flags for {spurious.size} labels; expected one per pore")
    n_flagged = int(flagged.sum())
    fdr = float((flagged & ~spurious).sum()) / n_flagged if n_flagged else 0.0
    n_spurious = int(spurious.sum())
    power = float((flagged & spurious).sum()) / n_spurious if n_spurious else float("nan")
    return fdr, power, n_flagged
