"""The per-rule conda environments (envs/*.yaml): every rule names one, and their pins are the
versions the pip install of this test environment uses (so `--sdm conda` runs the tested code).

Creating the environments needs a conda channel, which CI cannot reach; these checks are what can
be verified offline.
"""

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
# conda names that differ from the Python distribution's name
DISTRIBUTION = {"pyyaml": "PyYAML"}


def _rules():
    """(file, rule name, block text) of every rule in workflow/rules."""
    for path in RULE_FILES:
        text = path.read_text()
        starts = [(m.start(), m.group(1)) for m in re.finditer(r"^rule (\w+):", text, flags=re.M)]
        for (start, name), (end, _) in zip(starts, [*starts[1:], (len(text), None)]):
            yield path, name, text[start:end]


def test_every_rule_names_an_existing_environment():
    rules = list(_rules())
    assert len(rules) > 20
    for path, name, block in rules:
        if not re.search(r"^\s+(script|shell|run|notebook|wrapper):", block, flags=re.M):
            continue  # a target rule (only inputs) runs nothing and needs no environment
        found = re.search(r'^\s+conda:\s*\n\s+"([^"]+)"', block, flags=re.M)
        assert found, f"{path.name}: rule {name} has no conda: directive"
        env = (path.parent / found.group(1)).resolve()
        assert env in [e.resolve() for e in ENV_FILES], f"{path.name}: rule {name} names {found.group(1)}, not an envs/ file"


def _pins(env_file):
    spec = yaml.safe_load(env_file.read_text())
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][^\s+]*)(\+\S+)?", line.strip())
                if m:
                    yield m.group(1), m.group(2)
            continue
        m = re.fullmatch(r"(?:[\w\-]+::)?([A-Za-z0-9_.\-]+)=([0-9][0-9.]*[0-9])", dep.strip())
        if m and m.group(1) != "python":
            yield m.group(1), m.group(2)


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_environment_pins_match_the_tested_install(env_file):
    pins = list(_pins(env_file))
    assert pins, f"{env_file.name}: no exact version pins"
    for name, pinned in pins:
        try:
            installed = version(DISTRIBUTION.get(name, name))
        except PackageNotFoundError:
            pytest.fail(f"{env_file.name}: pins {name}={pinned}, which this test environment does not have")
        assert installed.split("+")[0] == pinned, f"{env_file.name}: pins {name} {pinned}, tests run {installed}"


def test_torch_environment_asks_for_a_cuda_build():
    text = (REPO / "envs" / "torch.yaml").read_text()
    assert re.search(r"torch==[\d.]+\+cu\d+", text) and "download.pytorch.org/whl/cu" in text
