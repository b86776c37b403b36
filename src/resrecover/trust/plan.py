"""What the config's ``trust:`` block asks the workflow to build (read by workflow/rules/common.smk)."""

from __future__ import annotations

from ..config import LABELLED, ConfigError, labelled_realizations, sigma_tag
from ..methods.registry import NETWORKS
from .ensemble import ensemble_method

REALIZATIONS = ("train", "alternate")
#: realizations with ground truth the classifier may be fitted on, in order (never ``alternate``);
#: ``labelled`` stands for every extra labelled foam (``realizations.labelled``)
FIT_REALIZATIONS = ("train", "validation", LABELLED)


def _sigma_subset(block: dict, key: str, levels: list[str], where: str) -> list[str]:
    """``trust.<key>`` as σ tags (all of ``levels`` when empty); ConfigError unless each is one of ``levels``.

    ``where`` ends the error message: which levels, what is expected.
    """
    tags = [sigma_tag(s) for s in block[key]] or levels
    outside = [s for s in tags if s not in levels]
    if outside:
        raise ConfigError(f"trust.{key}: {block[key]} holds {', '.join(outside)} µm, not a level {where}")
    return tags


def _fit_realizations(config: dict) -> list[str]:
    """``trust.classifier.fit_realizations`` in the order of :data:`FIT_REALIZATIONS`, ``labelled``
    replaced by the names of ``realizations.labelled``'s foams; ConfigError when it has none."""
    named = config["trust"]["classifier"]["fit_realizations"]
    fit = []
    for name in FIT_REALIZATIONS:
        if name not in named:
            continue
        if name != LABELLED:
            fit.append(name)
        elif not (labelled := labelled_realizations(config)):
            raise ConfigError(
                f"trust.classifier.fit_realizations: {named} names '{LABELLED}' but realizations.{LABELLED} "
                "is empty; expected the seeds of the extra labelled foams there"
            )
        else:
            fit.extend(labelled)
    return fit


def trust_plan(config: dict) -> dict:
    """Resolve the ``trust:`` block of a validated config into lists the rules expand over.

    Returns
    -------
    dict with
    - ``enabled`` : bool;
    - ``methods`` : methods that get trust maps (``trust.methods`` ∩ ``methods``, config order);
    - ``networks`` : those of them that are networks (each gets an ensemble when K ≥ 2);
    - ``ensemble_methods`` : ``{network}_ensemble`` names (none when K = 1);
    - ``sigmas`` : σ tags (``trust.sigmas_um``, or every ``scan.sigmas_um`` when empty);
    - ``ensemble_sigmas`` : σ tags whose networks get an ensemble (``trust.ensemble_sigmas_um``,
      or all of ``sigmas`` when empty; none when K = 1);
    - ``realizations`` : realizations that get trust maps;
    - ``member_realizations`` : realizations the ensemble members recover;
    - ``evaluate_ensembles`` : whether the ensembles join the study's tables (they cover every σ:
      then they are recovered and evaluated like any method, on both realizations);
    - ``ensemble_size`` : K;
    - ``classifier`` : whether the spurious-pore classifier is fitted and applied;
    - ``fit_realizations`` : realizations it is fitted and calibrated on (they get trust maps too),
      the extra labelled foams by name (``labelled1``, ...);
    - ``flag_realizations`` : realizations whose pores it scores (the others: ``alternate``).

    Raises :class:`resrecover.config.ConfigError` for a σ that is not a low-resolution level (or,
    for an ensemble σ, not a trust level), and for a classifier fitted on ``labelled`` foams when
    ``realizations.labelled`` lists none.
    """
    block = config["trust"]
    lres = [sigma_tag(s) for s in config["scan"]["sigmas_um"]]
    plan = {
        "enabled": bool(block["enabled"]),
        "methods": [],
        "networks": [],
        "ensemble_methods": [],
        "sigmas": [],
        "ensemble_sigmas": [],
        "realizations": [],
        "member_realizations": [],
        "evaluate_ensembles": False,
        "ensemble_size": int(block["ensemble_size"]),
        "classifier": False,
        "fit_realizations": [],
        "flag_realizations": [],
    }
    sigmas = _sigma_subset(
        block, "sigmas_um", lres, f"of scan.sigmas_um {config['scan']['sigmas_um']}; expected a subset of it"
    )
    ensemble_sigmas = _sigma_subset(
        block, "ensemble_sigmas_um", sigmas,
        f"of the trust maps ({', '.join(sigmas)} µm); expected a subset of trust.sigmas_um",
    )
    if "alternate" not in block["realizations"]:
        raise ConfigError(
            f"trust.realizations: {block['realizations']} lacks 'alternate'; expected it (the trust maps are "
            "validated on the realization the models never saw)"
        )
    if not plan["enabled"]:
        return plan
    methods = [m for m in config["methods"] if m in block["methods"]]
    networks = [m for m in methods if m in NETWORKS]
    if plan["ensemble_size"] < 2:  # no ensemble: residual maps only
        ensemble_sigmas = []
    evaluate = set(ensemble_sigmas) == set(lres) and bool(networks)
    classifier = bool(block["classifier"]["enabled"]) and bool(methods)
    # the classifier's fitting realizations need trust maps and per-pore features of their own
    fit = _fit_realizations(config) if classifier else []
    mapped = [r for r in REALIZATIONS if r in block["realizations"] or r in fit] + [r for r in fit if r not in REALIZATIONS]
    plan.update(
        methods=methods,
        networks=networks,
        ensemble_methods=[ensemble_method(n) for n in networks] if ensemble_sigmas else [],
        sigmas=[s for s in lres if s in sigmas],
        ensemble_sigmas=[s for s in lres if s in ensemble_sigmas] if networks else [],
        realizations=mapped,
        member_realizations=(
            list(dict.fromkeys([*REALIZATIONS, *mapped])) if evaluate else mapped
        ),
        evaluate_ensembles=evaluate,
        classifier=classifier,
        fit_realizations=fit,
        flag_realizations=[r for r in REALIZATIONS if r in block["realizations"] and r not in fit],
    )
    return plan
