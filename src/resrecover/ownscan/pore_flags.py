"""Is this pore real? The spurious-pore classifier on an own-scan pair (docs/own_scans.md#is-this-pore-real).

The study fits its classifier (:mod:`resrecover.trust.spurious`) on a phantom whose ground truth
says which recovered pores are spurious. A pair carries its own partial truth: the high-resolution
interior scan. :func:`pair_flag_pores_from_files` (rule ``pair_flag_pores``):

1. segments the whole recovered field of view with the study's recipe
   (:func:`resrecover.evaluate.segmentation.segment_pores`, :func:`resrecover.evaluate.pores.pore_table`)
   and adds the classifier's per-pore features (:func:`resrecover.trust.features.pore_features`)
   with the pair's trust maps (rule ``pair_trust``: the residual, and the test-time-augmentation
   variance when the maps carry it);
2. segments the high-resolution voxels of the overlap the same way and matches the recovery's pores
   there one to one (:func:`resrecover.evaluate.pores.match_pores`): a pore with at least
   :data:`OVERLAP_SHARE` of its voxels inside the overlap gets the high-resolution scan's verdict
   (``matched_high_res_label``: its partner, 0 = none, i.e. spurious);
3. fits the study's model (:func:`resrecover.trust.score.fit_trust_model`, its L2 penalty chosen as
   the study chooses it) on every labelled spurious pore and a seeded share of the labelled real
   ones, and calibrates the conformal p-values on the other real ones (:func:`assign_roles`);
4. saves the model as JSON, reads that file back and applies it, unchanged, to every pore of the
   field of view (:func:`apply_pair_model`): ``p_spurious``, ``conformal_p`` and the
   Benjamini-Hochberg flag list at ``trust.classifier.fdr`` over the pores the high-resolution
   scan does not label.

Everything is in memory: the whole recovered volume, its labels and maps (as rule ``pair_trust``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_csv, read_volume
from ..trust.maps import TrustError
from ..trust.spurious import MIN_SPURIOUS_PORES

log = logging.getLogger(__name__)

#: a recovered pore is labelled by the high-resolution scan when at least this share of its voxels
#: lies inside the overlap (the verdict is then made on its part inside: the two scans' pores are
#: cut by the overlap's faces alike)
OVERLAP_SHARE = 0.5
#: fewest real pores held out to calibrate the conformal p-values (the smallest p-value is 1/(n + 1))
MIN_CALIBRATION_PORES = 20
#: share of the labelled real pores held out for calibration; the others fit, with every spurious pore
CALIBRATION_SHARE = 0.5
#: features of ``trust.classifier.features`` a pair's model leaves out, and why (the column is still written)
PAIR_EXCLUDED_FEATURES = {
    "fov_edge_distance_um": (
        "the overlap is an interior region by construction, so the labelled pores never have the values "
        "this feature takes near the field of view's edge: the model would extrapolate there, and real "
        "pores near the edge would score above every calibration pore (flags with no FDR guarantee)"
    ),
}
#: columns the classifier adds after the pore table and its features
FLAG_COLUMNS = ["overlap_share", "matched_high_res_label", "role", "p_spurious", "conformal_p", "flagged"]
#: values of ``role``: labelled pores that fit the model or calibrate it, and the pores it scores
ROLES = ("fit", "calibration", "scored")


# --------------------------------------------------------------------------------------------
# Pores and their labels on the overlap
# --------------------------------------------------------------------------------------------


def overlap_on_grid(high_start_vox, overlap_box, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The overlap as ``(slices of the recovered grid, slices of the training high-res volume)``.

    ``high_start_vox``: the recovered volume's attribute (where the high-res scan's voxel 0 lies in
    it); ``overlap_box``: ``((z0, z1), (y0, y1), (x0, x1))`` high-res voxels inside the low-res FOV
    (the training volume's ``overlap_box``, i.e. its own voxels); ``shape``: the recovered volume's.
    Clipped to the recovered region (an ROI may cut it).
    """
    if high_start_vox is None:
        raise TrustError("recovered volume: no 'high_start_vox' attribute; expected a recovery of a registered pair")
    grid, high = [], []
    for start, (a, b), n in zip(np.asarray(high_start_vox, dtype=np.int64), overlap_box, shape):
        lo, hi = max(int(start) + int(a), 0), min(int(start) + int(b), int(n))
        if hi <= lo:
            raise TrustError(f"the overlap {overlap_box} (high-res voxels from {list(high_start_vox)}) lies outside "
                             f"the recovered region {tuple(shape)}; expected a recovery (or roi) that includes it")
        grid.append(slice(lo, hi))
        high.append(slice(lo - int(start) - int(a), hi - int(start) - int(a)))
    return tuple(grid), tuple(high)


def segment_pair_pores(volume: np.ndarray, voxel_um: float, config: dict, keep_cut_pores: bool = False) -> np.ndarray:
    """Pore labels of a pair's volume with the study's recipe, the whole volume as the sample.

    The Otsu threshold is taken over the whole volume. The study drops the pores cut by the first or
    last slice; here every face is the field of view's edge, so pores cut by any face are dropped
    (:func:`cut_labels`): their size is unknown, and the air around a sample that does not fill the
    field of view (split into pieces by the watershed) would otherwise count as pores. No wall margin
    is taken off the y-x faces (they are not the sample's surface). ``keep_cut_pores``: labels with
    the cut pores kept (the overlap's high-res voxels, whose faces cut the recovery's pores alike when
    the two are compared; and the recovery before its features are read, see
    :func:`pair_flag_pores_from_files`).
    """
    from skimage.segmentation import relabel_sequential

    from ..evaluate.segmentation import segment_pores
    from ..evaluate.stages import segmentation_settings

    # one slice outside the mask above and below: the recipe's edge kill then drops nothing, and
    # :func:`cut_labels` decides alike for all six faces
    padded = np.pad(np.asarray(volume), ((1, 1), (0, 0), (0, 0)), mode="edge")
    mask = np.ones(padded.shape, dtype=bool)
    mask[[0, -1]] = False
    labels = segment_pores(padded, mask, voxel_um, wall_margin_vox=0, **segmentation_settings(config))[1:-1]
    if keep_cut_pores:
        return labels
    labels[np.isin(labels, cut_labels(labels))] = 0
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def cut_labels(labels: np.ndarray) -> np.ndarray:
    """The labels present on any face of the volume (pores the field of view cuts)."""
    faces = [np.take(labels, i, axis=a).ravel() for a in range(3) for i in (0, -1)]
    cut = np.unique(np.concatenate(faces))
    return cut[cut > 0]


def overlap_labels(labels: np.ndarray, high_labels: np.ndarray, grid_box) -> pd.DataFrame:
    """Per recovered pore: ``overlap_share`` and ``matched_high_res_label`` (NaN when not labelled).

    The recovery's labels inside ``grid_box`` are matched one to one with ``high_labels`` (the
    high-res voxels of the same box) by :func:`resrecover.evaluate.pores.match_pores`. A pore with at
    least :data:`OVERLAP_SHARE` of its voxels inside gets its partner's label (also where the pair
    differs only in size: a real pore at the wrong size), or 0 (spurious).
    """
    from ..evaluate.pores import match_pores

    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    ids = np.arange(1, n + 1, dtype=np.int64)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    crop = labels[grid_box]
    inside = np.bincount(crop.ravel(), minlength=n + 1)[1 : n + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(counts > 0, inside / np.maximum(counts, 1), 0.0)
    matched = match_pores(crop, high_labels).partner_of(ids).astype(np.float64)
    matched[share < OVERLAP_SHARE] = np.nan
    return pd.DataFrame({"label": ids, "overlap_share": share, "matched_high_res_label": matched})[counts > 0]


def pair_pore_table(recovered: np.ndarray, labels: np.ndarray, voxel_um: float, config: dict,
                    maps: dict[str, np.ndarray]) -> pd.DataFrame:
    """The recovery's pore table (:func:`resrecover.evaluate.pores.pore_table`), its centroids in
    voxels of the recovered volume (``centroid_{z,y,x}_vox``) and the classifier's features.

    ``contrast_noise`` is read against the segmentation's threshold (Otsu over the whole volume) in
    units of the recovered volume's local noise, as in the study; ``fov_edge_distance_um`` is the
    distance to the volume's faces; ``maps`` (``{name: map}``) each give a ``<name>_mean`` column.
    """
    from ..evaluate.pores import pore_table
    from ..evaluate.segmentation import pore_threshold
    from ..trust.features import pore_features
    from ..trust.maps import noise_level_map

    table = pore_table(labels, voxel_um)
    for axis, n in zip("zyx", labels.shape):
        # pore_table's µm centroids are relative to the grid's centre; voxels index the file directly
        table[f"centroid_{axis}_vox"] = table[f"centroid_{axis}_um"] / voxel_um + (n - 1) / 2.0
    block = config["trust"]
    whole = np.ones(recovered.shape, dtype=bool)
    block_vox = max(2, int(round(float(block["noise_block_um"]) / voxel_um)))
    return pore_features(
        table, labels, recovered, pore_threshold(recovered, whole), noise_level_map(recovered, None, block_vox),
        np.ones((1, 1, 1), dtype=bool), voxel_um, maps=maps, wall_voxels=float(block["pore_wall_voxels"]),
    )


def assign_roles(table: pd.DataFrame, seed: int) -> pd.Series:
    """``fit``, ``calibration`` or ``scored`` for each pore.

    Conformal p-values are valid when the calibration pores are exchangeable with the scored real
    pores: drawn alike and unseen by the model. Hence a seeded random split of the labelled real
    pores (a share :data:`CALIBRATION_SHARE` calibrates, the rest fits), not a split by position: the
    calibration pores are then a random sample of the overlap's real pores, like the fitting ones.
    Every labelled spurious pore fits (they are few, and calibration uses real pores only); the
    model's intercept is corrected for the real pores it did not see (:func:`fit_pair_model`).
    Unlabelled pores are ``scored``.
    """
    matched = table["matched_high_res_label"].to_numpy(dtype=np.float64)
    role = np.full(len(table), "scored", dtype=object)
    role[matched == 0] = "fit"
    real = np.flatnonzero(matched > 0)
    held_out = np.random.default_rng(seed).permutation(real)[: int(round(CALIBRATION_SHARE * real.size))]
    role[real] = "fit"
    role[held_out] = "calibration"
    return pd.Series(role, index=table.index, name="role")


# --------------------------------------------------------------------------------------------
# The model: fitted on the overlap, applied everywhere
# --------------------------------------------------------------------------------------------


def pair_features(config: dict) -> list[str]:
    """``trust.classifier.features`` less :data:`PAIR_EXCLUDED_FEATURES`."""
    return [f for f in config["trust"]["classifier"]["features"] if f not in PAIR_EXCLUDED_FEATURES]


def fit_pair_model(table: pd.DataFrame, config: dict, info: dict | None = None):
    """``(model, fitted)``: the trust model of a pair's labelled pores (column ``role``).

    The fitting pores are split at their median z into two tables, the folds of the study's
    leave-one-table-out choice of the L2 penalty (:func:`resrecover.trust.spurious.choose_l2`); the
    model is then fitted on both, and its calibration scores are the P(spurious) of the
    ``calibration`` pores. Its intercept is moved by log(f), f the share of labelled real pores that
    fit (every spurious pore does): the case-control correction, so that ``p_spurious`` estimates
    the overlap's own spurious rate rather than the enriched fitting sample's. With fewer than
    :data:`MIN_SPURIOUS_PORES` spurious or :data:`MIN_CALIBRATION_PORES` calibration pores, a
    constant model noting why (:func:`resrecover.trust.spurious.unfitted_model`, one warning) and
    ``fitted`` False.
    """
    from ..trust.score import fit_trust_model, spurious_labels
    from ..trust.spurious import calibrated_model, choose_l2, unfitted_model

    block = config["trust"]["classifier"]
    info = dict(info or {})
    labelled = table[table["role"] != "scored"]
    frame = labelled.assign(matched_gt_label=labelled["matched_high_res_label"])
    fit, cal = frame[frame["role"] == "fit"], frame[frame["role"] == "calibration"]
    n_spurious = int(spurious_labels(fit).sum())
    n_real = int((labelled["matched_high_res_label"] > 0).sum())
    if n_spurious < MIN_SPURIOUS_PORES or len(cal) < MIN_CALIBRATION_PORES:
        note = (f"not fitted: the overlap labels {n_spurious} spurious and {n_real} real pores; at least "
                f"{MIN_SPURIOUS_PORES} spurious pores and {MIN_CALIBRATION_PORES} real ones to calibrate on (half "
                "of the real pores) are needed, so p_spurious is left empty and nothing is flagged")
        model = unfitted_model([fit], [dict(info, part="overlap")], n_spurious, len(labelled), note=note)
        return model, False
    features = pair_features(config)
    lower = (fit["centroid_z_vox"] < fit["centroid_z_vox"].median()).to_numpy()
    halves = [(t, name) for t, name in ((fit[lower], "overlap, lower z half"), (fit[~lower], "overlap, upper z half"))
              if len(t)]
    tables = [t for t, _ in halves]
    l2, cv = choose_l2(tables, features, block["l2_candidates"], default=float(block["l2"]))
    model = fit_trust_model(tables, features=features, training_info=[dict(info, part=name) for _, name in halves],
                            l2=l2, calibration_frames=[cal], calibration_info=[dict(info, part="overlap")])
    share = (n_real - len(cal)) / n_real
    model = calibrated_model(dataclasses.replace(model, intercept=model.intercept + float(np.log(share))), cal)
    model.notes += [
        *(f"left out feature '{f}': {why}" for f, why in PAIR_EXCLUDED_FEATURES.items()
          if f in block["features"]),
        f"fitted on every spurious pore of the overlap ({n_spurious}) and {n_real - len(cal)} of its {n_real} real "
        f"pores (seeded), calibrated on the other {len(cal)}; intercept moved by log({share:.3g}) for the real "
        "pores the fit did not see",
    ]
    if any(np.isfinite(v) for v in cv.values()):
        model.notes.append(f"l2 = {l2:g} chosen by cross-validation over the two z halves of the fitting pores "
                           f"(held-out ROC AUC by l2: {', '.join(f'{k:g}: {v:.3f}' for k, v in cv.items())})")
    else:
        model.notes.append(f"l2 = {l2:g} (trust.classifier.l2): no z half of the fitting pores holds both kinds "
                           "of pore, so none could be chosen by cross-validation")
    return model, True


def apply_pair_model(table: pd.DataFrame, model, alpha: float) -> pd.DataFrame:
    """``table`` with ``p_spurious``, ``conformal_p`` and ``flagged`` from a saved trust model.

    ``model``: a :func:`resrecover.trust.score.save_trust_model` JSON file (or a model). Its
    features must be columns of ``table``: a model of other features is refused with one line
    naming the file. ``flagged`` is the Benjamini-Hochberg list at ``alpha`` over the pores whose
    ``role`` is ``scored`` (every pore when there is no ``role``): the overlap's labelled pores have
    the high-res scan's verdict instead, and p-values of pores the model was fitted or calibrated
    on carry no guarantee.
    """
    from ..trust.conformal import benjamini_hochberg, conformal_p_values
    from ..trust.score import load_trust_model

    source = model if isinstance(model, (str, Path)) else None
    model = load_trust_model(model) if source is not None else model
    try:
        p = model.p_spurious(table)
    except TrustError as err:
        raise TrustError(f"{source or 'model'}: {err}") from None
    out = table.copy()
    out["p_spurious"] = p
    out["conformal_p"] = conformal_p_values(model.calibration_scores, p)
    scored = (out["role"] == "scored").to_numpy() if "role" in out.columns else np.ones(len(out), dtype=bool)
    flagged = np.zeros(len(out), dtype=bool)
    flagged[scored] = benjamini_hochberg(out["conformal_p"].to_numpy()[scored], float(alpha))
    out["flagged"] = flagged
    return out


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def _overlap_box(attrs: dict, path) -> list:
    box = attrs.get("overlap_box")
    box = json.loads(box) if isinstance(box, str) else box
    if box is None or np.shape(box) != (3, 2):
        raise TrustError(f"{path}: overlap_box {box!r}; expected the training volume of rule pair_training_data")
    return [[int(a), int(b)] for a, b in box]


def pair_flag_pores_from_files(recovered_path, trust_path, high_path, out_pores, out_model, out_labels, config: dict,
                               seed: int, **provenance) -> pd.DataFrame:
    """Rule ``pair_flag_pores``: the recovery's pores with the classifier's verdicts, its labels and the model.

    Parameters
    ----------
    recovered_path : results/pairs/{pair}/recovered/{method}.h5 (attribute ``high_start_vox``).
    trust_path : its trust maps (rule ``pair_trust``): ``residual``, and ``tta_variance`` when available.
    high_path : results/pairs/{pair}/training/hres.h5, the high-res voxels of the overlap.
    out_pores : per-pore CSV: the pore table, ``centroid_{z,y,x}_vox``, the features, :data:`FLAG_COLUMNS`.
    out_model : the fitted model as JSON (:func:`resrecover.trust.score.save_trust_model`).
    out_labels : the recovery's pore labels (int32 HDF5, :func:`resrecover.evaluate.pores.write_labels`);
        the CSV's ``label`` indexes them.
    config : validated config (``evaluation.min_pore_volume_voxels``, ``trust``).
    seed : the calibration split's seed.
    provenance : recorded in the model's ``training`` entries and the labels' attributes (pair, method).
    """
    from skimage.segmentation import relabel_sequential

    from ..config import config_hash
    from ..evaluate.pores import write_labels
    from ..trust.maps import read_trust_maps
    from ..trust.score import save_trust_model

    started = time.perf_counter()
    recovered, attrs = read_volume(recovered_path)
    voxel = float(attrs["voxel_size_um"])
    maps, maps_attrs = read_trust_maps(trust_path, names=("residual", "tta_variance"))
    if maps["residual"].shape != recovered.shape:
        raise TrustError(f"{trust_path}: maps of shape {maps['residual'].shape}; expected the recovery's "
                         f"{recovered.shape}")
    high, high_attrs = read_volume(high_path)
    grid_box, high_box = overlap_on_grid(attrs.get("high_start_vox"), _overlap_box(high_attrs, high_path),
                                         recovered.shape)
    # the pores cut by the field of view's faces are dropped only after every feature is read, so that
    # a pore near an edge still counts its cut neighbours (dropped first, they would make edge pores
    # look lonely, unlike any pore of the interior overlap)
    labels = segment_pair_pores(recovered, voxel, config, keep_cut_pores=True)
    high_labels = segment_pair_pores(high[high_box], voxel, config, keep_cut_pores=True)
    del high
    used = {"residual": maps["residual"]}
    if bool(maps_attrs.get("tta_variance_available", False)):
        used["tta_variance"] = maps["tta_variance"]
    table = pair_pore_table(recovered, labels, voxel, config, used)
    del recovered, maps, used
    table = table.merge(overlap_labels(labels, high_labels, grid_box), on="label", how="left")
    cut = cut_labels(labels)
    labels[np.isin(labels, cut)] = 0
    labels, forward, _ = relabel_sequential(labels)
    table = table[~table["label"].isin(cut)].reset_index(drop=True)
    table["label"] = np.asarray(forward[table["label"].to_numpy(dtype=np.int64, copy=True)], dtype=np.int64)
    table["role"] = assign_roles(table, seed)
    info = {**{k: str(v) for k, v in provenance.items()}, "file": str(recovered_path)}
    model, fitted = fit_pair_model(table, config, info)
    save_trust_model(model, out_model)
    alpha = float(config["trust"]["classifier"]["fdr"])
    if fitted:
        out = apply_pair_model(table, out_model, alpha)  # the saved file, as a user would apply it
    else:
        out = table.assign(p_spurious=np.nan, conformal_p=np.nan, flagged=False)
    # the recovery's place in the low-res frame goes along, so the labels can be laid on other volumes
    grid = {k: [float(v) for v in np.ravel(attrs[k])] for k in ("origin_um", "high_start_vox") if k in attrs}
    write_labels(out_labels, labels, voxel, source=str(recovered_path), config_hash=config_hash(config), **grid,
                 **{k: str(v) for k, v in provenance.items()})
    atomic_write_csv(out, out_pores)
    counts = out["role"].value_counts()
    log.info("%s: %d pores (%d fit, %d calibrate, %d scored; %d spurious by the high-res scan), features %s, "
             "%d flagged at FDR %g (%.1f s)", out_pores, len(out), counts.get("fit", 0), counts.get("calibration", 0),
             counts.get("scored", 0), int((out["matched_high_res_label"] == 0).sum()),
             model.features if fitted else [], int(out["flagged"].sum()), alpha, time.perf_counter() - started)
    return out
