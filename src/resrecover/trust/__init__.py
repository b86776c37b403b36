"""Trust maps without ground truth: can a recovered pore be believed when there is no high-res scan of it?

- :mod:`.maps`: the data-consistency residual (the recovery re-degraded against the input it came
  from, in units of the input's own noise), the ensemble disagreement, and the blur estimate of
  own scans;
- :mod:`.ensemble`: member seeds, the ensemble mean and spread;
- :mod:`.pore_trust`: each map averaged over every pore and its wall, and a per-pore trust score;
- :mod:`.validate`: the maps against the ground truth's verdicts on the phantoms;
- :mod:`.plan`: what the config's ``trust:`` block asks the workflow to build;
- :mod:`.stages`: the rules' entry points.
"""

from .ensemble import ensemble_from_files, ensemble_method
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
from .validate import roc_auc, spearman_map_correlation

__all__ = [
    "TRUST_COLUMNS",
    "TRUST_DATASETS",
    "TrustError",
    "calibrate_on_overlap",
    "degradation_sigma_um",
    "disagreement_map",
    "ensemble_from_files",
    "ensemble_method",
    "estimate_blur_um",
    "gaussian_blur",
    "haar_finest_band",
    "noise_correlation_factor",
    "noise_level_map",
    "pore_regions",
    "pore_trust_table",
    "read_trust_maps",
    "region_means",
    "residual_map",
    "roc_auc",
    "spearman_map_correlation",
    "trust_plan",
    "trust_score",
    "write_trust_maps",
]
