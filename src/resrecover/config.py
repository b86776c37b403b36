"""Configuration: schema validation with defaults, and the small naming helpers every stage shares."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from . import ResrecoverError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ResrecoverError):
    """A configuration value breaks the schema or a cross-key rule."""


def _fill_defaults(validator_class):
    """Extend a jsonschema validator so that it inserts schema defaults (the approach of the jsonschema FAQ)."""
    from jsonschema import validators

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _key_path(error) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (("." if parts else "") + str(p)))
    return "".join(parts) or "<top level>"


def _describe(error) -> str:
    """One line: which key, which value, what is allowed."""
    key = _key_path(error)
    v = error.validator
    inst = error.instance
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, dict) else []
        where = key if key != "<top level>" else "config"
        return f"{where}: unknown key(s) {', '.join(map(repr, extra))}; allowed keys: {', '.join(allowed)}"
    if v == "enum":
        return f"{key}: {inst!r} is not allowed; expected one of {', '.join(map(repr, error.validator_value))}"
    if v == "type":
        return f"{key}: {inst!r} has the wrong type; expected {error.validator_value}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"{key}: {inst!r} is out of range; expected a value {op} {error.validator_value}"
    if v in ("minItems", "maxItems"):
        return f"{key}: {inst!r} has {len(inst)} item(s); expected {v.replace('Items', '')} {error.validator_value}"
    if v == "required":
        return f"{key}: {error.message}"
    if v == "uniqueItems":
        return f"{key}: {inst!r} has repeated items; expected unique values"
    return f"{key}: {error.message}"


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config`` against the schema, fill defaults in place and check cross-key rules.

    Returns the same dict. Raises :class:`ConfigError` with a one-line message naming the key, the
    value and what is allowed.
    """
    from jsonschema import Draft202012Validator

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    if not isinstance(config, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {type(config).__name__}")
    validator = _fill_defaults(Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        raise ConfigError(_describe(errors[0]))
    _check_cross_keys(config)
    return config


def _deepnet_blocks(config: dict):
    """(key, settings) of the deepnet block and of each of its σ overrides merged over it."""
    block = config["deepnet"]
    yield "deepnet", block
    for i, entry in enumerate(block["sigma_overrides"]):
        yield f"deepnet.sigma_overrides[{i}]", {**block, **entry}


#: ``realizations.labelled``: extra labelled foams, named ``labelled1``, ``labelled2``, ... in the list's order
LABELLED = "labelled"


def realization_seeds(config: dict) -> dict[str, int]:
    """Every realization's phantom seed, by name.

    The named ones (``train``, ``alternate``, ``validation``, ``transfer``) as the config gives them,
    then the extra labelled foams of ``realizations.labelled`` as ``labelled1``, ``labelled2``, ...
    in the list's order.
    """
    seeds = {name: seed for name, seed in config["realizations"].items() if name != LABELLED}
    seeds.update(zip(labelled_realizations(config), config["realizations"].get(LABELLED, [])))
    return seeds


def labelled_realizations(config: dict) -> list[str]:
    """Names of the extra labelled foams (``realizations.labelled``): ``labelled1``, ``labelled2``, ..."""
    return [f"{LABELLED}{i}" for i in range(1, len(config["realizations"].get(LABELLED, [])) + 1)]


def _check_cross_keys(config: dict) -> None:
    seeds = realization_seeds(config)
    by_seed: dict[int, list[str]] = {}
    for name, seed in seeds.items():
        by_seed.setdefault(seed, []).append(name)
    shared = next((names for names in by_seed.values() if len(names) > 1), None)
    if shared:
        raise ConfigError(
            f"realizations: {' and '.join(shared)} share the seed {seeds[shared[0]]}; expected a different seed "
            "for each realization (the same seed gives the same foam, and a setting chosen on it would be "
            "chosen on the data it is reported on)"
        )
    low, high = config["transfer"]["aspect_ratio"]
    if low > high:
        raise ConfigError(
            f"transfer.aspect_ratio: {config['transfer']['aspect_ratio']} has min > max; expected [min, max]"
        )
    for network in ("deepnet", "srcnn", "rl"):
        for entry in config[network]["sigma_overrides"]:
            if not any(same_sigma(entry["sigma_um"], s) for s in config["scan"]["sigmas_um"]):
                raise ConfigError(
                    f"{network}.sigma_overrides: sigma_um {entry['sigma_um']} is not one of scan.sigmas_um "
                    f"{config['scan']['sigmas_um']}"
                )
    for sigma in config["tuning"]["sigmas_um"]:
        if not any(same_sigma(sigma, s) for s in config["scan"]["sigmas_um"]):
            raise ConfigError(f"tuning.sigmas_um: {sigma} is not one of scan.sigmas_um {config['scan']['sigmas_um']}")
    if "chosen" in config["tuning"]["compare"]:
        raise ConfigError("tuning.compare: 'chosen' is the name of the config's own settings; pick another name")
    inf = config["inference"]
    if inf["overlap_px"] * 2 >= inf["tile_px"]:
        raise ConfigError(
            f"inference.overlap_px: {inf['overlap_px']} is too large for inference.tile_px {inf['tile_px']}; "
            "expected 2 * overlap_px < tile_px"
        )
    if inf["srcnn_overlap_px"] * 2 >= inf["srcnn_tile_px"]:
        raise ConfigError(
            f"inference.srcnn_overlap_px: {inf['srcnn_overlap_px']} is too large for inference.srcnn_tile_px "
            f"{inf['srcnn_tile_px']}; expected 2 * srcnn_overlap_px < srcnn_tile_px"
        )
    scan = config["scan"]
    if scan["source_to_detector_um"] <= scan["source_to_object_um"]:
        raise ConfigError(
            f"scan.source_to_detector_um: {scan['source_to_detector_um']} must exceed "
            f"scan.source_to_object_um ({scan['source_to_object_um']})"
        )
    if scan["target_sigma_um"] in scan["sigmas_um"]:
        raise ConfigError(
            f"scan.sigmas_um: {scan['sigmas_um']} contains the target blur {scan['target_sigma_um']}; "
            "expected only the low-resolution levels"
        )
    for where, dn in _deepnet_blocks(config):
        if dn["n_slices"] % 2 == 0:
            raise ConfigError(f"{where}.n_slices: {dn['n_slices']} is even; expected an odd number of slices")
        if dn["tile_px"] % (2 ** dn["depth"]):
            raise ConfigError(
                f"{where}.tile_px: {dn['tile_px']} is not divisible by 2**deepnet.depth ({2 ** dn['depth']})"
            )
        shape = config["volume_shape"]
        if dn["tile_px"] > min(shape[1:]):
            raise ConfigError(f"{where}.tile_px: {dn['tile_px']} exceeds the slice size {shape[1:]}")
    if config["srcnn"]["patch_px"] > min(shape):
        raise ConfigError(f"srcnn.patch_px: {config['srcnn']['patch_px']} exceeds the volume shape {shape}")


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return validate_config(config)


def sigma_tag(sigma_um: float) -> str:
    """Format a blur level as in result paths: 3 -> '3', 2.5 -> '2.5' (no trailing zeros)."""
    return f"{float(sigma_um):g}"


def all_sigmas(config: dict) -> list[float]:
    """Target blur first, then the low-resolution levels."""
    return [config["scan"]["target_sigma_um"], *config["scan"]["sigmas_um"]]


def same_sigma(a: float, b: float) -> bool:
    """Whether two blur levels (µm) are the same one (a config's σ and a path's or an override's)."""
    return abs(float(a) - float(b)) < 1e-9


def sigma_settings(block: dict, sigma_um: float | None) -> dict:
    """A method's config block for one σ: a copy without ``sigma_overrides``, each entry of it for
    ``sigma_um`` applied over the block in order (``None``: none applied)."""
    settings = copy.deepcopy(block)
    overrides = settings.pop("sigma_overrides", None) or []
    if sigma_um is not None:
        for entry in overrides:
            if same_sigma(entry["sigma_um"], sigma_um):
                settings.update({k: v for k, v in entry.items() if k != "sigma_um"})
    return settings


def rl_iterations(config: dict, sigma_um: float) -> int:
    """Richardson-Lucy's iterations at σ: ``rl.iterations``, or its ``rl.sigma_overrides`` entry for σ."""
    return int(sigma_settings(config["rl"], sigma_um)["iterations"])


def training_seed(master_seed: int, network: str, sigma_um: float, member: int = 0) -> int:
    """The seed of a network's training at σ: weights, tiles, SRCNN's split (member 0: the study's model).

    Members 1, 2, ... are the trust ensemble's extra networks; a learning curve uses member 0's seed
    so that its last snapshot is the study's model itself.
    """
    if member < 0:
        raise ConfigError(f"ensemble member {member}; expected 0, 1, ...")
    tag = sigma_tag(sigma_um)
    if member == 0:
        return derive_seed(master_seed, "train", network, tag)
    return derive_seed(master_seed, "train", network, tag, "member", int(member))


def config_hash(config: dict) -> str:
    """Short stable hash of a config, stored as provenance with every output."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed derived from the master seed and any labels (realization, sigma, member...).

    Stable across processes and Python versions (no use of ``hash()``).
    """
    blob = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")
