"""Is this pore real? A small, inspectable logistic model of P(spurious) from per-pore features.

The model is fitted on phantom realizations, where the one-to-one matching to the ground truth says
which pores are spurious (``matched_gt_label`` empty or ≤ 0), and applied to pores of any scan
through the features of :mod:`.features`. It is an L2-regularized logistic regression on
standardized features: a handful of numbers that can be read (a coefficient is the change of the
log-odds per standard deviation of its feature), saved as plain JSON and checked on load.

Also here: the statistics that say whether the model is any good, the expected calibration error
with its reliability table, and bootstrap confidence intervals of the ROC AUC and of AUC
differences (paired, so two scores of the same pores are compared on the same resamples).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.atomic import atomic_output
from .features import FEATURE_COLUMNS
from .maps import TrustError
from ..evaluate.pores import CUT_BY_ENDS, MIS_SIZED
from .validate import roc_auc

log = logging.getLogger(__name__)

#: format version of a saved trust model (bumped when the JSON layout changes)
TRUST_MODEL_VERSION = 1
_LIST_FIELDS = ("mean", "scale", "coef", "impute")


def spurious_labels(pore_df: pd.DataFrame) -> np.ndarray:
    """True where a pore matches no ground-truth pore (``matched_gt_label`` NaN, empty or 0).

    A real pore recovered at the wrong size (:data:`resrecover.evaluate.pores.MIS_SIZED`) is real,
    so False. A pore cut by an end of the ground truth (:data:`~resrecover.evaluate.pores.CUT_BY_ENDS`)
    has no label: a table holding one is refused, so that it is left out
    (:func:`~.validate.labelled_pores`) rather than counted as either kind.
    """
    if "matched_gt_label" not in pore_df.columns:
        raise TrustError(f"pore table: columns {list(pore_df.columns)}; expected a 'matched_gt_label' column")
    matched = pd.to_numeric(pore_df["matched_gt_label"], errors="coerce").to_numpy(dtype=np.float64)
    if (matched == CUT_BY_ENDS).any():
        raise TrustError(f"pore table: {int((matched == CUT_BY_ENDS).sum())} pores with matched_gt_label {CUT_BY_ENDS} "
                         "(cut by an end of the ground truth); expected labelled pores only (labelled_pores)")
    # NaN compares False, so unmatched NaN/empty rows count as spurious
    return ~((matched > 0) | (matched == MIS_SIZED))


@dataclass
class TrustModel:
    """Logistic model of P(spurious): logit = Σ coef · (x − mean) / scale + intercept.

    ``impute`` is the value a NaN (or infinite) feature takes (the training median); ``training``
    describes each frame the model saw (``role`` "fit" or "calibration", its size and number of
    spurious pores, plus what the caller said, e.g. realization, method, σ); ``calibration_scores``
    are the sorted P(spurious) of real (matched) calibration pores, for :mod:`.conformal`;
    ``notes`` say what the fit dropped or could not guarantee.
    """

    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    impute: np.ndarray
    calibration_scores: np.ndarray
    training: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    l2: float = 1.0
    version: int = TRUST_MODEL_VERSION

    def p_spurious(self, df: pd.DataFrame) -> np.ndarray:
        """P(spurious) in [0, 1] of each row of ``df`` (which must hold every model feature)."""
        x = _feature_matrix(df, self.features, "frame")
        x = np.where(np.isfinite(x), x, np.asarray(self.impute, dtype=np.float64))
        logit = ((x - self.mean) / self.scale) @ np.asarray(self.coef, dtype=np.float64) + float(self.intercept)
        return 0.5 * (1.0 + np.tanh(0.5 * logit))  # the logistic function, without overflow warnings


def _feature_matrix(df: pd.DataFrame, features: list[str], what: str) -> np.ndarray:
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise TrustError(f"{what}: no column {missing}; expected the model's features {list(features)}")
    try:
        return df[list(features)].to_numpy(dtype=np.float64).reshape(len(df), len(features))
    except (TypeError, ValueError):
        raise TrustError(f"{what}: non-numeric values in {list(features)}; expected numbers") from None


def fit_trust_model(
    frames: list[pd.DataFrame],
    features: list[str] = FEATURE_COLUMNS,
    training_info: list[dict] | None = None,
    l2: float = 1.0,
    calibration_frames: list[pd.DataFrame] | None = None,
    calibration_info: list[dict] | None = None,
) -> TrustModel:
    """Fit :class:`TrustModel` on pore tables (features of :mod:`.features` and ``matched_gt_label``).

    Parameters
    ----------
    frames : pore tables to fit on (concatenated; one per realization/method/σ).
    features : feature columns. A feature missing from any frame, finite nowhere or constant is
        dropped with a note in ``model.notes`` (e.g. ``disagreement_mean`` without an ensemble);
        an error if none remain.
    training_info, calibration_info : optional dicts, one per frame, stored in ``model.training``.
    l2 : L2 penalty on the standardized coefficients (scikit-learn's ``C = 1 / l2``).
    calibration_frames : pore tables whose matched pores give the conformal calibration scores.
        They should be other realizations than ``frames``: scores of pores the model was fitted on
        are optimistic, which makes conformal p-values anti-conservative. Without them the fitting
        frames are used and a note says so.
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn is only needed to fit

    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    if not frames:
        raise TrustError("frames: none given; expected at least one pore table")
    if not l2 > 0:
        raise TrustError(f"l2 = {l2}; expected a positive penalty")
    notes: list[str] = []
    kept = []
    for name in features:
        lacking = [i for i, f in enumerate(frames) if name not in f.columns]
        if lacking:
            notes.append(f"dropped feature '{name}': not a column of training frame(s) {lacking}")
        else:
            kept.append(name)
    data = pd.concat([f[kept] for f in frames], ignore_index=True)
    x = np.array(_feature_matrix(data, kept, "training frames"))  # a writable copy
    x[~np.isfinite(x)] = np.nan
    y = np.concatenate([spurious_labels(f) for f in frames])
    use = []
    for j, name in enumerate(kept):
        col = x[:, j]
        if not np.isfinite(col).any():
            notes.append(f"dropped feature '{name}': NaN in every training pore")
        elif np.nanmax(col) == np.nanmin(col):
            notes.append(f"dropped feature '{name}': constant ({np.nanmax(col):g}) over the training pores")
        else:
            use.append(j)
    if not use:
        raise TrustError(f"features {list(features)}: none usable in the training frames; expected at least one")
    kept, x = [kept[j] for j in use], x[:, use]
    n_spurious = int(y.sum())
    if n_spurious == 0 or n_spurious == y.size:
        raise TrustError(f"training frames: {n_spurious} spurious of {y.size} pores; expected both spurious and real pores")

    impute = np.nanmedian(x, axis=0)
    x = np.where(np.isnan(x), impute, x)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0  # only reachable when imputation made a feature constant
    clf = LogisticRegression(C=1.0 / l2, class_weight=None, max_iter=1000)
    clf.fit((x - mean) / scale, y)

    model = TrustModel(
        features=kept, mean=mean, scale=scale, coef=clf.coef_[0].astype(np.float64),
        intercept=float(clf.intercept_[0]), impute=impute, calibration_scores=np.zeros(0),
        training=_describe(frames, training_info, "fit"), notes=notes, l2=float(l2),
    )
    if calibration_frames is None:
        cal = frames
        model.notes.append(
            "calibration scores from the fitting frames: conformal p-values are optimistic "
            "(pass calibration_frames from another realization)"
        )
        log.warning("trust model: %s", model.notes[-1])
    else:
        cal = [calibration_frames] if isinstance(calibration_frames, pd.DataFrame) else list(calibration_frames)
        model.training += _describe(cal, calibration_info, "calibration")
    real = [f[~spurious_labels(f)] for f in cal]
    scores = np.concatenate([model.p_spurious(f) for f in real]) if real else np.zeros(0)
    if scores.size == 0:
        raise TrustError("calibration frames: no matched pore; expected real pores to calibrate on")
    model.calibration_scores = np.sort(scores)
    return model


def _describe(frames, info, role: str) -> list[dict]:
    if info is not None and len(info) != len(frames):
        raise TrustError(f"{role} info: {len(info)} entries for {len(frames)} frames; expected one per frame")
    return [
        {**(info[i] if info is not None else {}), "role": role, "n": len(f), "n_spurious": int(spurious_labels(f).sum())}
        for i, f in enumerate(frames)
    ]


# ---------------------------------------------------------------------------------------------
# JSON files: plain data only, so a model file can be read, diffed and never executes anything
# ---------------------------------------------------------------------------------------------


def save_trust_model(model: TrustModel, path: str | Path) -> None:
    """Write ``model`` as JSON to ``path`` atomically (a killed writer leaves no half file)."""
    payload = asdict(model)
    for key in (*_LIST_FIELDS, "calibration_scores"):
        payload[key] = [float(v) for v in np.asarray(payload[key], dtype=np.float64)]
    try:
        text = json.dumps(payload, indent=1, allow_nan=False, default=_plain)
    except (TypeError, ValueError) as err:
        raise TrustError(f"{path}: model not writable as JSON ({err}); expected finite numbers and plain data") from None
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def load_trust_model(path: str | Path) -> TrustModel:
    """Read a model written by :func:`save_trust_model`, checking every key, type and length."""
    path = Path(path)

    def bad(what: str) -> TrustError:
        return TrustError(f"{path}: {what}".replace("\n", " "))

    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise bad(f"not a readable trust-model JSON file ({err}); expected a file of save_trust_model") from None
    if not isinstance(payload, dict):
        raise bad(f"top level is {type(payload).__name__}; expected a JSON object")
    expected = set(TrustModel.__dataclass_fields__)
    if set(payload) != expected:
        missing, extra = sorted(expected - set(payload)), sorted(set(payload) - expected)
        found = ", ".join(f"{what} keys {keys}" for what, keys in (("missing", missing), ("unknown", extra)) if keys)
        raise bad(f"{found}; expected exactly {sorted(expected)}")
    feats = payload["features"]
    n_feats = len(feats) if isinstance(feats, list) else -1
    numbers = lambda v, n: isinstance(v, list) and len(v) == n and all(_is_number(x) for x in v)  # noqa: E731
    checks = [  # key, test, what was expected
        ("version", lambda v: v == TRUST_MODEL_VERSION, f"format version {TRUST_MODEL_VERSION}"),
        ("features", lambda v: n_feats > 0 and all(isinstance(f, str) for f in v) and len(set(v)) == n_feats,
         "a non-empty list of distinct column names"),
        *[(k, lambda v: numbers(v, n_feats), f"{n_feats} finite numbers, one per feature") for k in _LIST_FIELDS],
        ("scale", lambda v: min(v) > 0, "positive standard deviations"),
        ("calibration_scores", lambda v: isinstance(v, list) and numbers(v, len(v)) and v and 0 <= min(v) <= max(v) <= 1,
         "a non-empty list of probabilities"),
        ("intercept", _is_number, "a finite number"),
        ("l2", lambda v: _is_number(v) and v > 0, "a positive number"),
        ("training", lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v), "a list of objects"),
        ("notes", lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings"),
    ]
    for key, test, expected in checks:
        if not test(payload[key]):
            value = payload[key]
            shown = f"a list of {len(value)}" if isinstance(value, list) else f"{value!r:.60}"
            raise bad(f"'{key}' is {shown}; expected {expected}")
    arrays = {k: np.asarray(payload[k], dtype=np.float64) for k in (*_LIST_FIELDS, "calibration_scores")}
    return TrustModel(
        features=list(feats), mean=arrays["mean"], scale=arrays["scale"], coef=arrays["coef"],
        intercept=float(payload["intercept"]), impute=arrays["impute"],
        calibration_scores=np.sort(arrays["calibration_scores"]),
        training=payload["training"], notes=payload["notes"], l2=float(payload["l2"]), version=payload["version"],
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


# ---------------------------------------------------------------------------------------------
# how good is a score: calibration and ROC AUC with bootstrap intervals
# ---------------------------------------------------------------------------------------------


def reliability_table(p, y, n_bins: int = 10) -> pd.DataFrame:
    """Predicted vs observed frequency in ``n_bins`` equal-width bins of ``p`` over [0, 1].

    Columns: ``bin`` (0-based), ``p_mean`` (mean prediction), ``observed`` (fraction of ``y`` True),
    ``n`` (pores); empty bins have n = 0 and NaN means.
    """
    p, y = np.asarray(p, dtype=np.float64).ravel(), np.asarray(y, dtype=bool).ravel()
    if p.shape != y.shape or p.size == 0 or int(n_bins) < 1:
        raise TrustError(f"{p.size} probabilities, {y.size} outcomes, {n_bins} bins; expected one outcome per p, ≥ 1 bin")
    if not (np.isfinite(p) & (p >= 0) & (p <= 1)).all():
        raise TrustError("p: values outside [0, 1] or NaN; expected probabilities")
    n_bins = int(n_bins)
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # p = 1 belongs to the last bin
    n = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_mean = np.bincount(b, weights=p, minlength=n_bins) / n
        observed = np.bincount(b, weights=y.astype(np.float64), minlength=n_bins) / n
    return pd.DataFrame({"bin": np.arange(n_bins), "p_mean": p_mean, "observed": observed, "n": n})


def expected_calibration_error(p, y, n_bins: int = 10) -> float:
    """ECE: Σ_bins (n_b / N) · |observed_b − p_mean_b| over equal-width bins (0 = calibrated)."""
    table = reliability_table(p, y, n_bins)
    full = table[table["n"] > 0]
    return float((full["n"] * (full["observed"] - full["p_mean"]).abs()).sum() / full["n"].sum())


def roc_auc_bootstrap(score, y, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """ROC AUC of ``score`` (higher = positive) for labels ``y``, with a percentile bootstrap interval.

    Resamples are stratified (positives and negatives drawn separately, as pROC does), so every
    resample has both classes. Returns (auc, lo, hi).
    """
    return _bootstrap([score], y, n_boot, seed, level, lambda a: a[0])


def auc_difference_bootstrap(score_a, score_b, y, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """AUC(score_a) − AUC(score_b) on the same pores, with a paired bootstrap interval: (diff, lo, hi).

    Both scores are evaluated on the same resample each time, so what the pores have in common
    cancels and the interval is that of the difference, not of two independent AUCs.
    """
    return _bootstrap([score_a, score_b], y, n_boot, seed, level, lambda a: a[0] - a[1])


def _bootstrap(scores, y, n_boot, seed, level, combine):
    y = np.asarray(y, dtype=bool).ravel()
    s = [np.asarray(v, dtype=np.float64).ravel() for v in scores]
    if any(v.shape != y.shape for v in s):
        raise TrustError(f"scores of {[v.size for v in s]} pores for {y.size} labels; expected one score per pore")
    if not 0 < level < 1 or int(n_boot) < 1:
        raise TrustError(f"level = {level}, n_boot = {n_boot}; expected 0 < level < 1 and n_boot ≥ 1")
    keep = np.logical_and.reduce([np.isfinite(v) for v in s])  # a pore counts only where every score exists
    s, y = [v[keep] for v in s], y[keep]
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if pos.size == 0 or neg.size == 0:
        return float("nan"), float("nan"), float("nan")
    value = combine([roc_auc(v, y) for v in s])
    rng = np.random.default_rng(seed)
    stats = np.empty(int(n_boot))
    for k in range(stats.size):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        stats[k] = combine([roc_auc(v[idx], y[idx]) for v in s])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(value), float(lo), float(hi)
