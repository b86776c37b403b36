"""Trust maps without ground truth: can a recovered pore be believed when there is no high-res scan of it?

- :mod:`.maps`: the data-consistency residual (the recovery re-degraded against the input it came
  from, in units of the input's own noise), the ensemble disagreement, and the blur estimate of
  own scans;
- :mod:`.ensemble`: member seeds, the ensemble mean and spread;
- :mod:`.pore_trust`: each map averaged over every pore and its wall, and a per-pore trust score;
- :mod:`.features`: per-pore features (contrast in noise units, FOV-edge distance, neighbours);
- :mod:`.score`: a logistic model of P(spurious) from them, its JSON file, calibration and AUCs;
- :mod:`.conformal`: conformal p-values, and Benjamini-Hochberg flagging of pores at a set FDR;
- :mod:`.validate`: the maps against the ground truth's verdicts on the phantoms;
- :mod:`.plan`: what the config's ``trust:`` block asks the workflow to build;
- :mod:`.stages`: the rules' entry points.
"""

from .conformal import benjamini_hochberg, conformal_p_values, fdr_and_power, flag_spurious
from .ensemble import ensemble_from_files, ensemble_method
from .features import FEATURE_COLUMNS, pore_features
from .maps import (
    TRUST_DATASETS,
    TrustError,
    calibrate_on_overlap,
    degradation_sigma_um,
    disagreement_map,
    estimate_blur_um,
    gaussian_blur,
    haar_finest_band,
    noise_correlation_factor,
    noise_level_map,
    read_trust_maps,
    residual_map,
    write_trust_maps,
)
from .plan import trust_plan
from .pore_trust import TRUST_COLUMNS, pore_regions, pore_trust_table, region_means, trust_score
from .score import (
    TrustModel,
    auc_difference_bootstrap,
    expected_calibration_error,
    fit_trust_model,
    load_trust_model,
    reliability_table,
    roc_auc_bootstrap,
    save_trust_model,
    spurious_labels,
)
from .validate import labelled_pores, roc_auc, spearman_map_correlation

__all__ = [
    "FEATURE_COLUMNS",
    "TRUST_COLUMNS",
    "TRUST_DATASETS",
    "TrustError",
    "TrustModel",
    "auc_difference_bootstrap",
    "benjamini_hochberg",
    "calibrate_on_overlap",
    "conformal_p_values",
    "degradation_sigma_um",
    "disagreement_map",
    "ensemble_from_files",
    "ensemble_method",
    "estimate_blur_um",
    "expected_calibration_error",
    "fdr_and_power",
    "fit_trust_model",
    "flag_spurious",
    "gaussian_blur",
    "haar_finest_band",
    "labelled_pores",
    "load_trust_model",
    "noise_correlation_factor",
    "noise_level_map",
    "pore_features",
    "pore_regions",
    "pore_trust_table",
    "read_trust_maps",
    "region_means",
    "reliability_table",
    "residual_map",
    "roc_auc",
    "roc_auc_bootstrap",
    "save_trust_model",
    "spearman_map_correlation",
    "spurious_labels",
    "trust_plan",
    "trust_score",
    "write_trust_maps",
]
