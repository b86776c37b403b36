"""Rule degrade_scan: clean projections → blurred (σ µm), Poissonian projections (SPEC §4.2).

σ = scan.target_sigma_um is the HRES scan: blurred by that σ and noisy like every other level.
Each (realization, σ) draws its own noise stream, so input and target noise are independent.
"""

from resrecover.config import config_hash, derive_seed, sigma_tag
from resrecover.ct import degrade_scan_file
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    scan = config["scan"]
    realization = snakemake.wildcards.realization
    sigma_um = float(snakemake.params.sigma_um)
    degrade_scan_file(
        snakemake.input[0],
        snakemake.output[0],
        sigma_um=sigma_um,
        seed=derive_seed(config["seed"], realization, sigma_tag(sigma_um)),
        photons_per_pixel=scan["photons_per_pixel"],
        attenuation_per_um=scan["attenuation_per_um"],
        chunk=scan["projection_chunk"],
        config_hash=config_hash(config),
        realization=realization,
    )
