"""The engine: trains groups of rounds on a device (each group one batched model), evaluates them and returns their
records (spec.records.RunResult); it knows no store."""

from digitpairs.engine.training import group_rounds, train

__all__ = ["group_rounds", "train"]
