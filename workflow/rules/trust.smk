# Stage 6 (ours): trust maps without ground truth (src/resrecover/trust). Each recovered volume gets a
# data-consistency residual (re-degraded recovery vs its own input, in units of the input's noise)
# and, for the networks, the disagreement of K independently trained models; every pore gets the
# maps' means over it and its wall; on the alternate realization the maps are checked against
# what the ground truth finds (MS-SSIM maps, spurious pores): results/tables/trust_validation.csv.


# The ensemble's extra members: trained by rule `train` (member 1, 2, ...; train.smk) and applied by the
# network-recovery rule itself, with the member's model; their recoveries are temporary (only the ensemble's
# mean and spread are kept).
use rule recover_network as recover_ensemble_member with:
    output:
        temp(MEMBER_RECOVERED),
    log:
        "logs/trust/recover/{network}/{realization}/sigma{sigma}/member{member}.log",
    benchmark:
        "results/benchmarks/trust/recover/{network}/{realization}/sigma{sigma}/member{member}.tsv"
    wildcard_constraints:
        member=EXTRA_MEMBER,


rule ensemble:
    input:
        members=ensemble_members,
    output:
        "results/recovered/{network}_ensemble/{realization}/sigma{sigma}.h5",
    log:
        "logs/trust/ensemble/{network}/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/trust/ensemble/{network}/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/trust_ensemble.py"


# a network's maps also carry its test-time-augmentation variance: the study's model applied to flipped
# inputs (trust.tta_transforms), hence the torch environment and, for networks, a GPU when there is one
rule trust_maps:
    input:
        unpack(trust_network_model),
        volume=recovered_for_trust,
        lres="results/recon/{realization}/sigma{sigma}.h5",
        ensemble=trust_ensemble_input,
    output:
        "results/trust/{method}/{realization}/sigma{sigma}.h5",
    log:
        "logs/trust/maps/{method}/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/trust/maps/{method}/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: lambda wc: 2 if wc.method in TRUST_NETWORKS else 1
    resources:
        gpu=lambda wc: 1 if wc.method in TRUST_NETWORKS else 0,
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/trust_maps.py"


rule trust_pores:
    input:
        volume=recovered_for_trust,
        maps="results/trust/{method}/{realization}/sigma{sigma}.h5",
        labels="results/labels/{method}/{realization}/sigma{sigma}.h5",
        pores="results/pores/{method}/{realization}/sigma{sigma}.csv",
    output:
        report(
            "results/trust/pores/{method}/{realization}/sigma{sigma}.csv",
            caption="../report/trust_pores.rst",
            category="Trust per pore",
            labels={
                "method": "{method}",
                "realization": "{realization}",
                "sigma_um": "{sigma}",
            },
        ),
    log:
        "logs/trust/pores/{method}/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/trust/pores/{method}/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/trust_pores.py"


# The spurious-pore classifier: one model per method, fitted on the labelled pores of the fitting
# realizations (trust.classifier.fit_realizations: train, validation, the extra labelled foams) at every
# trust σ, never on alternate's
rule trust_model:
    input:
        trust_model_training,
    output:
        TRUST_MODEL,
    log:
        "logs/trust/model/{method}.log",
    benchmark:
        "results/benchmarks/trust/model/{method}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/trust_model.py"


# p_spurious of every pore, its conformal p-value against the fitting realization's real pores at the
# same σ, and the Benjamini-Hochberg flag list at trust.classifier.fdr
rule flag_pores:
    input:
        pores="results/trust/pores/{method}/{realization}/sigma{sigma}.csv",
        model=TRUST_MODEL,
        calibration=expand(
            "results/trust/pores/{{method}}/{realization}/sigma{{sigma}}.csv",
            realization=TRUST_FIT[:1],
        ),
    output:
        report(
            FLAGGED_PORES,
            caption="../report/flag_pores.rst",
            category="Trust per pore",
            labels={
                "method": "{method}",
                "realization": "{realization}",
                "sigma_um": "{sigma}",
                "table": "flags",
            },
        ),
    log:
        "logs/trust/flags/{method}/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/trust/flags/{method}/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/flag_pores.py"


# maps, msssim, pores and lres hold one file per entry of params.volumes, in its order (keyed_paths)
rule trust_validation:
    input:
        maps=keyed_paths(
            "results/trust/{method}/{realization}/sigma{sigma}.h5",
            TRUST_VALIDATION_KEYS,
        ),
        msssim=keyed_paths(
            "results/maps/msssim/{method}/{realization}/sigma{sigma}.h5",
            TRUST_VALIDATION_KEYS,
        ),
        pores=[trust_validation_pores(key) for key in TRUST_VALIDATION_KEYS],
        training=expand(
            "results/trust/pores/{method}/{realization}/sigma{sigma}.csv",
            method=TRUST_METHODS if TRUST["classifier"] else [],
            realization=TRUST_FIT,
            sigma=TRUST_SIGMAS,
        ),
        models=expand(TRUST_MODEL, method=TRUST_METHODS if TRUST["classifier"] else []),
        lres=keyed_paths(
            "results/recon/{realization}/sigma{sigma}.h5", TRUST_VALIDATION_KEYS
        ),
        summaries=trust_summaries(),
        ground_truth="results/recon/alternate/ground_truth.h5",
    output:
        report(
            "results/tables/trust_validation.csv",
            caption="../report/trust_validation.rst",
            category="Tables",
            labels={"table": "trust_validation"},
        ),
        roc=report(
            "results/tables/trust_roc.csv",
            caption="../report/trust_roc.rst",
            category="Tables",
            labels={"table": "trust_roc"},
        ),
        reliability=report(
            "results/tables/trust_reliability.csv",
            caption="../report/trust_reliability.rst",
            category="Tables",
            labels={"table": "trust_reliability"},
        ),
    log:
        "logs/trust/validation.log",
    benchmark:
        "results/benchmarks/trust/validation.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        volumes=TRUST_VALIDATION_KEYS,
    script:
        "../scripts/trust_validation.py"


rule fig10_trust_maps:
    input:
        maps=expand(
            "results/trust/{method}/alternate/sigma{sigma}.h5",
            method=TRUST_METHODS,
            sigma=TRUST_FIGURE_SIGMAS,
        ),
        msssim=expand(
            "results/maps/msssim/{method}/alternate/sigma{sigma}.h5",
            method=TRUST_METHODS,
            sigma=TRUST_FIGURE_SIGMAS,
        ),
        validation="results/tables/trust_validation.csv",
        roc="results/tables/trust_roc.csv",
        reliability="results/tables/trust_reliability.csv",
    output:
        **figure_rule_outputs("fig10_trust_maps"),
    log:
        "logs/figures/fig10_trust_maps.log",
    benchmark:
        "results/benchmarks/figures/fig10_trust_maps.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule pair_trust:
    input:
        unpack(pair_inputs),
        recovered="results/pairs/{pair}/recovered/{pair_method}.h5",
        registration="results/pairs/{pair}/registration.json",
        lres="results/pairs/{pair}/training/lres.h5",
        hres="results/pairs/{pair}/training/hres.h5",
    output:
        "results/pairs/{pair}/trust/{pair_method}.h5",
    log:
        "logs/pairs/{pair}/trust_{pair_method}.log",
    benchmark:
        "results/benchmarks/pairs/{pair}/trust_{pair_method}.tsv"
    wildcard_constraints:
        pair=PAIR_PATTERN,
        pair_method="deepnet|srcnn",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        pair=lambda wc: PAIRS[wc.pair],
    script:
        "../scripts/trust_pair.py"
