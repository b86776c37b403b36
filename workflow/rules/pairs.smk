# Stage 7: your own scans (docs/own_scans.md; src/resrecover/ownscan/). For every entry of `pairs:`
# (and the synthetic pair `example` when multiscale_example.enabled, whose scans rule
# multiscale_example writes to EXAMPLE_DIR, resources/multiscale_example): register the high-res
# interior scan in the low-res large-FOV scan, resample the low-res overlap onto the high-res voxels
# (the training pair), train each method on it, and recover the whole low-res field of view (or
# `roi`) on the high-res grid, out of core: results/pairs/{pair}/recovered/{pair_method}.h5.
# With the trust maps and the classifier (trust.enabled, trust.classifier.enabled), every network's
# recovery also gets its pores' verdicts (rule pair_flag_pores), and the example their scores against
# the phantom (PAIR_TARGETS, common.smk).


rule multiscale_example:
    input:
        "results/phantoms/alternate.h5",
    output:
        low=f"{EXAMPLE_DIR}/low.tif",
        high=f"{EXAMPLE_DIR}/high.h5",
        truth=f"{EXAMPLE_DIR}/truth.json",
    log:
        "logs/pairs/multiscale_example.log",
    benchmark:
        "results/benchmarks/pairs/example/multiscale_example.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        example=config["multiscale_example"],
        seed=derive_seed(config["seed"], "multiscale_example"),
    script:
        "../scripts/pair_example.py"


rule pair_register:
    input:
        unpack(pair_inputs),
    output:
        "results/pairs/{pair}/registration.json",
    log:
        "logs/pairs/{pair}/register.log",
    benchmark:
        "results/benchmarks/pairs/{pair}/register.tsv"
    wildcard_constraints:
        pair=PAIR_PATTERN,
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        pair=lambda wc: PAIRS[wc.pair],
    script:
        "../scripts/pair_register.py"


rule pair_training_data:
    input:
        unpack(pair_inputs),
        registration="results/pairs/{pair}/registration.json",
    output:
        lres="results/pairs/{pair}/training/lres.h5",
        hres="results/pairs/{pair}/training/hres.h5",
    log:
        "logs/pairs/{pair}/training_data.log",
    benchmark:
        "results/benchmarks/pairs/{pair}/training_data.tsv"
    wildcard_constraints:
        pair=PAIR_PATTERN,
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        pair=lambda wc: PAIRS[wc.pair],
    script:
        "../scripts/pair_training_data.py"


rule pair_train:
    input:
        lres="results/pairs/{pair}/training/lres.h5",
        hres="results/pairs/{pair}/training/hres.h5",
    output:
        weights="results/pairs/{pair}/models/{pair_method}/model.safetensors",
        settings="results/pairs/{pair}/models/{pair_method}/model.json",
        train_log="results/pairs/{pair}/models/{pair_method}/train_log.csv",
    log:
        "logs/pairs/{pair}/train_{pair_method}.log",
    benchmark:
        "results/benchmarks/pairs/{pair}/train_{pair_method}.tsv"
    wildcard_constraints:
        pair=PAIR_PATTERN,
        pair_method="deepnet|srcnn",
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        checkpoint_dir="results/pairs/{pair}/models/{pair_method}/checkpoints",
        seed=lambda wc: derive_seed(config["seed"], "pair", wc.pair, wc.pair_method),
        iterations=lambda wc: PAIRS[wc.pair]["iterations"],
    script:
        "../scripts/pair_train.py"


rule pair_recover:
    input:
        unpack(pair_inputs),
        weights="results/pairs/{pair}/models/{pair_method}/model.safetensors",
        settings="results/pairs/{pair}/models/{pair_method}/model.json",
        registration="results/pairs/{pair}/registration.json",
    output:
        "results/pairs/{pair}/recovered/{pair_method}.h5",
    log:
        "logs/pairs/{pair}/recover_{pair_method}.log",
    benchmark:
        "results/benchmarks/pairs/{pair}/recover_{pair_method}.tsv"
    wildcard_constraints:
        pair=PAIR_PATTERN,
        pair_method="deepnet|srcnn",
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        pair=lambda wc: PAIRS[wc.pair],
    script:
        "../scripts/pair_recover.py"


rule pair_registration_error:
    input:
        registration="results/pairs/example/registration.json",
        truth=f"{EXAMPLE_DIR}/truth.json",
    output:
        "results/pairs/example/registration_error.csv",
    log:
        "logs/pairs/example/registration_error.log",
    benchmark:
        "results/benchmarks/pairs/example/registration_error.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/pair_registration_error.py"


rule pair_example_metrics:
    input:
        recovered=expand(
            "results/pairs/example/recovered/{pair_method}.h5",
            pair_method=config["multiscale_example"]["methods"],
        ),
        phantom="results/phantoms/alternate.h5",
        low=f"{EXAMPLE_DIR}/low.tif",
    output:
        "results/pairs/example/recovery_metrics.csv",
    log:
        "logs/pairs/example/recovery_metrics.log",
    benchmark:
        "results/benchmarks/pairs/example/recovery_metrics.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        methods=config["multiscale_example"]["methods"],
    script:
        "../scripts/pair_example_metrics.py"


# Is this pore real? (docs/own_scans.md#is-this-pore-real) The recovery's pores, labelled on the overlap by the
# high-res scan, fit and calibrate the study's spurious-pore classifier; its p_spurious, conformal p-value and
# Benjamini-Hochberg flag (at trust.classifier.fdr) go to every pore of the recovered field of view.
rule pair_flag_pores:
    input:
        recovered="results/pairs/{pair}/recovered/{pair_method}.h5",
        trust="results/pairs/{pair}/trust/{pair_method}.h5",
        hres="results/pairs/{pair}/training/hres.h5",
    output:
        pores="results/pairs/{pair}/trust/{pair_method}_pores.csv",
        model="results/pairs/{pair}/trust/{pair_method}_model.json",
        labels="results/pairs/{pair}/trust/{pair_method}_labels.h5",
    log:
        "logs/pairs/{pair}/flag_pores_{pair_method}.log",
    benchmark:
        "results/benchmarks/pairs/{pair}/flag_pores_{pair_method}.tsv"
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
        seed=lambda wc: derive_seed(
            config["seed"], "pair_flags", wc.pair, wc.pair_method
        ),
    script:
        "../scripts/pair_flag_pores.py"


# the example's flag lists against the phantom, on the pores outside the overlap (no label was seen there)
rule pair_example_trust_metrics:
    input:
        pores=expand(
            "results/pairs/example/trust/{pair_method}_pores.csv",
            pair_method=config["multiscale_example"]["methods"],
        ),
        labels=expand(
            "results/pairs/example/trust/{pair_method}_labels.h5",
            pair_method=config["multiscale_example"]["methods"],
        ),
        phantom="results/phantoms/alternate.h5",
    output:
        "results/pairs/example/trust_metrics.csv",
    log:
        "logs/pairs/example/trust_metrics.log",
    benchmark:
        "results/benchmarks/pairs/example/trust_metrics.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        methods=config["multiscale_example"]["methods"],
    script:
        "../scripts/pair_example_trust_metrics.py"
