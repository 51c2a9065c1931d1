"""The thresholds of the rule that flags a round as failed (analysis/diagnose.py), settings of the report and of
`digitpairs verify`."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    chance_margin: float = 0.05  # a round within this of always answering the commoner answer failed
    min_loss_drop: float = 0.05  # a round whose training loss fell by less than this share failed

    def rule(self) -> str:
        return (f"a round is flagged when its test accuracy is at most {100 * self.chance_margin:g} points above "
                "always giving the commoner answer on its test pairs, when its training loss fell by less than "
                f"{100 * self.min_loss_drop:g}% from the first epoch to the last, or when it produced NaN")


DEFAULT = Diagnosis()
