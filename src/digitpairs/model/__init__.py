"""The networks: PairNet (digit branches and a comparison head) of K members at once, built from an Arch and a
Config, and how a trained round reads pairs."""

from digitpairs.model.layers import KBatchNorm1d, KConv2d, KDropout, KLinear
from digitpairs.model.pairnet import Branch, PairNet, create_model, own_path
from digitpairs.model.read import average

__all__ = ["Branch", "KBatchNorm1d", "KConv2d", "KDropout", "KLinear", "PairNet", "average", "create_model", "own_path"]
