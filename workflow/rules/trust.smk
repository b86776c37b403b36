# Stage 6 (ours): trust maps without ground truth (src/resrecover/trust). Each recovered volume gets a
# data-consistency residual (re-degraded recovery vs its own input, in units of the input's noise)
# and, for the networks, the disagreement of K independently trained models; every pore gets the
# maps' means over it and its wall; on the alternate realization the maps are checked against
# what the ground truth finds (MS-SSIM maps, spurious pores): results/tables/trust_validation.csv.


rule train_ensemble_member:
    input:
        lres="results/recon/train/sigma{sigma}.h5",
        hres=f"results/recon/train/sigma{TARGET_SIGMA}.h5",
    output:
        weights="results/models/{network}/sigma{sigma}/ensemble/member{k}/model.safetensors",
        settings="results/models/{network}/sigma{sigma}/ensemble/member{k}/model.json",
        train_log="results/models/{network}/sigma{sigma}/ensemble/member{k}/train_log.csv",
    log:
        "logs/trust/train/{network}/sigma{sigma}/member{k}.log",
    benchmark:
        "results/benchmarks/trust/train/{network}/sigma{sigma}/member{k}.tsv"
    wildcard_constraints:
        k="[1-9][0-9]*",
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        checkpoint_dir="results/models/{network}/sigma{sigma}/ensemble/member{k}/checkpoints",
        seed=lambda wc: training_seed(
            config["seed"], wc.network, float(wc.sigma), int(wc.k)
        ),
    script:
        "../scripts/trust_train_member.py"


rule recover_ensemble_member:
    input:
        weights="results/models/{network}/sigma{sigma}/ensemble/member{k}/model.safetensors",
        settings="results/models/{network}/sigma{sigma}/ensemble/member{k}/model.json",
        volume="results/recon/{realization}/sigma{sigma}.h5",
    output:
        temp("results/trust/members/{network}/{realization}/sigma{sigma}/member{k}.h5"),
    log:
        "logs/trust/recover/{network}/{realization}/sigma{sigma}/member{k}.log",
    benchmark:
        "results/benchmarks/trust/recover/{network}/{realization}/sigma{sigma}/member{k}.tsv"
    wildcard_constraints:
        k="[1-9][0-9]*",
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    script:
        "../scripts/trust_recover_member.py"


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


rule trust_maps:
    input:
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
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/trust_maps.py"


rule trust_pores:
    input:
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


rule trust_validation:
    input:
        maps=expand(
            "results/trust/{method}/alternate/sigma{sigma}.h5",
            method=TRUST_METHODS,
            sigma=TRUST_SIGMAS,
        ),
        msssim=expand(
            "results/maps/msssim/{method}/alternate/sigma{sigma}.h5",
            method=TRUST_METHODS,
            sigma=TRUST_SIGMAS,
        ),
        pores=expand(
            "results/trust/pores/{method}/alternate/sigma{sigma}.csv",
            method=TRUST_METHODS,
            sigma=TRUST_SIGMAS,
        ),
        summaries=trust_summaries(),
        lres=expand("results/recon/alternate/sigma{sigma}.h5", sigma=TRUST_SIGMAS),
        ground_truth="results/recon/alternate/ground_truth.h5",
    output:
        report(
            "results/tables/trust_validation.csv",
            caption="../report/trust_validation.rst",
            category="Tables",
            labels={"table": "trust_validation"},
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
