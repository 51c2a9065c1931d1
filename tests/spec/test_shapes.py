"""The network's sizes from its Config alone (spec/shapes.py) are those of the modules it builds."""

import dataclasses

import pytest

from digitpairs.model import create_model
from digitpairs.spec.config import Config
from digitpairs.spec.registry import ARCHS, arch_config
from digitpairs.spec.shapes import conv_sides, first_map_bytes, flops_per_pair


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("size", [14, 28])
def test_the_analytic_flops_are_the_modules(name, size):
    arch = ARCHS[name]
    cfg = arch_config(arch, Config(size=size))
    resolved = dataclasses.replace(arch, extra={})  # as a study's variant: its settings are in its config already
    for c in (cfg, cfg.replace(pad=not cfg.pad), cfg.replace(channels=(16, 48), hidden=64, head_hidden=12)):
        assert flops_per_pair(arch, c) == create_model(resolved, c).flops_per_pair()


def test_the_first_map_is_the_first_convolutions_output():
    cfg = Config(size=28, batch_size=100, precision="bf16")
    assert conv_sides(cfg) == (24, 8, 4) and conv_sides(cfg.replace(pad=True)) == (28, 14, 7)
    assert first_map_bytes(cfg) == 100 * 2 * 16 * 24 * 24 * 2
