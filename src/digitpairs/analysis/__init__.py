"""Numbers from a study's records: statistics over rounds, paired comparisons, the claims' verdicts, sweeps, the
answers' error grids, and which variant stands for a study. No torch, no matplotlib."""
