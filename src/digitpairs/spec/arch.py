"""A named architecture (Arch): the flags of PairNet and what it learns from. No torch."""

import dataclasses
from dataclasses import dataclass, field

from digitpairs.base.errors import UserError

OBJECTIVES = ("comparison", "comparison+digits", "digits")  # what a variant learns from (Arch.objective)
HEADS = ("mlp", "logic", "prob")  # how it compares the two digits (Arch.head)


@dataclass(frozen=True)
class Arch:
    """A named architecture: the flags of PairNet and what it learns from.

    objective: "comparison" (L_cmp alone), "comparison+digits" (L_cmp + alpha * L_digits: the report's auxiliary
    loss) or "digits" (the digit loss alone). head, how the answer is made: "mlp" (a learned head on the 20 digit
    probabilities), "logic" (pred_a <= pred_b) or "prob" (P(a <= b) > 1/2 under the two digit distributions)."""
    name: str
    label: str  # the report's name for it, used in tables and figures
    share: bool = True  # one digit branch for both images (weight sharing) or two
    objective: str = "comparison"  # the training loss, one of OBJECTIVES
    bn: bool = False  # BatchNorm after each conv's max-pooling and after the first fc layer (model.pairnet.Branch)
    dropout: bool = False  # dropout after the branch's first fc layer (the comparison head has none)
    head: str = "mlp"  # one of HEADS
    report: tuple[float, float, int] | None = None  # the report's (test accuracy, SD, #params), if in Table 1
    extra: dict = field(default_factory=dict)  # config overrides this architecture always applies

    @property
    def learns_digits(self) -> bool:
        """Whether the digit loss trains the branch (its digit accuracy means something)."""
        return self.objective != "comparison"

    def validate(self) -> "Arch":
        """Self, or a UserError for an objective or head that does not exist, or a pair of them that cannot learn
        its answer: an mlp head learns from L_cmp only, so it needs the comparison in the objective; a logic head
        answers with the digits' argmax, which L_cmp alone does not train (only the soft P(a <= b)), so it needs the
        digits in the objective. A prob head answers with P(a <= b), which every objective trains."""
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.head not in HEADS:
            raise UserError(f"head must be one of {', '.join(HEADS)}, not {self.head!r}")
        if self.head == "mlp" and self.objective == "digits":
            raise UserError("head mlp with objective digits: the comparison head would never learn (only L_cmp "
                            "trains it): use objective comparison+digits, or head logic or prob")
        if self.head == "logic" and self.objective == "comparison":
            raise UserError("head logic with objective comparison: the answer pred_a <= pred_b comes from digits "
                            "that L_cmp does not train: use objective digits or comparison+digits, or head prob")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def objective_of(arch: dict) -> str:
    """The objective of an Arch stored as a dict. Specs stored before the field existed say it with `aux` and
    `head`, as train.losses read them then: no aux, L_cmp alone; aux with the mlp head, L_cmp + alpha * L_digits;
    aux with a logic or prob head, the digit loss alone."""
    if "objective" in arch:
        return arch["objective"]
    if not arch.get("aux", False):
        return "comparison"
    return "comparison+digits" if arch.get("head", "mlp") == "mlp" else "digits"


def current_arch(arch: dict) -> dict:
    """A stored Arch dict in today's fields: its objective explicit, `aux` (the old spelling of it) dropped."""
    return {k: v for k, v in arch.items() if k != "aux"} | {"objective": objective_of(arch)}
