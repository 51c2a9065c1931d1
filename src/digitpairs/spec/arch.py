"""A named architecture (Arch): the flags of PairNet, the networks of your own it uses, and what it learns from.
No torch."""

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from digitpairs.base.errors import UserError
from digitpairs.spec import plugins

OBJECTIVES = ("comparison", "comparison+digits", "digits")  # what a variant learns from (Arch.objective)
HEADS = ("mlp", "logic", "prob")  # how it compares the two digits (Arch.head)


@dataclass(frozen=True)
class Arch:
    """A named architecture: the flags of PairNet and what it learns from.

    objective: "comparison" (L_cmp alone), "comparison+digits" (L_cmp + alpha * L_digits: the report's auxiliary
    loss) or "digits" (the digit loss alone). head, how the answer is made: "mlp" (a learned head on the 20 digit
    probabilities), "logic" (pred_a <= pred_b) or "prob" (P(a <= b) > 1/2 under the two digit distributions), or
    a head of your own: a function or class `() -> nn.Module` from the 20 digit probabilities (N, 20) to one logit
    (N, 1) or (N,), trained by L_cmp like the mlp head.

    branch: a digit branch of your own instead of the built-in CNN, a function or class `size -> nn.Module` from
    images (N, 1, size, size) to 10 digit logits (N, 10), defined at the top of a module (model/members.py trains
    it). The store names it by its reference `module:qualname` (spec/plugins.py)."""
    name: str
    label: str  # the report's name for it, used in tables and figures
    share: bool = True  # one digit branch for both images (weight sharing) or two
    objective: str = "comparison"  # the training loss, one of OBJECTIVES
    bn: bool = False  # BatchNorm after each conv's max-pooling and after the first fc layer (model.pairnet.Branch)
    dropout: bool = False  # dropout after the branch's first fc layer (the comparison head has none)
    head: str | Callable = "mlp"  # one of HEADS, or a factory of your own comparison head
    report: tuple[float, float, int] | None = None  # the report's (test accuracy, SD, #params), if in Table 1
    extra: dict = field(default_factory=dict)  # config overrides this architecture always applies
    branch: Callable | str | None = None  # a factory of your own digit branch (or its reference); None: the CNN
    plugin: str | None = field(default=None, compare=False)  # the plugin that registered it (not its identity)
    code: tuple = field(default=(), compare=False)  # its own parts' source hashes where registered (not its identity)

    @property
    def learns_digits(self) -> bool:
        """Whether the digit loss trains the branch (its digit accuracy means something)."""
        return self.objective != "comparison"

    @property
    def learned_head(self) -> bool:
        """Whether a trained head answers (mlp, or one of your own) rather than the digits (logic, prob)."""
        return self.head not in ("logic", "prob")

    @property
    def head_name(self) -> str:
        """The head as a word, or the reference of your own."""
        return self.head if isinstance(self.head, str) else plugins.reference(self.head)

    @property
    def own_parts(self) -> list[str]:
        """Which of its networks are yours (model/members.py): "branch", "head", both or neither."""
        return ["branch"] * (self.branch is not None) + ["head"] * (self.head not in HEADS)

    @property
    def own(self) -> bool:
        return bool(self.own_parts)

    def factory(self, part: str) -> Callable:
        """The factory of your own branch or head (part "branch" or "head"), found again where it is a reference."""
        fn = getattr(self, part)
        return plugins.resolve(fn, self.name) if isinstance(fn, str) else fn

    def validate(self) -> "Arch":
        """Self, or a UserError for an objective or head that does not exist, or a pair of them that cannot learn
        its answer: an mlp head learns from L_cmp only, so it needs the comparison in the objective; a logic head
        answers with the digits' argmax, which L_cmp alone does not train (only the soft P(a <= b)), so it needs the
        digits in the objective. A prob head answers with P(a <= b), which every objective trains."""
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if isinstance(self.head, str) and self.head not in HEADS and ":" not in self.head:
            raise UserError(f"head must be one of {', '.join(HEADS)} or a factory of your own, not {self.head!r}")
        for part in ("branch", "head"):
            fn = getattr(self, part)
            if fn is not None and not isinstance(fn, str):
                plugins.check_factory(fn, self.name, part)
        if self.branch is not None and (self.bn or self.dropout):
            raise UserError(f"architecture {self.name}: bn and dropout are flags of the built-in branch: put "
                            "BatchNorm or Dropout in your branch's module instead")
        if self.learned_head and self.objective == "digits":
            raise UserError(f"head {self.head_name} with objective digits: the comparison head would never learn "
                            "(only L_cmp trains it): use objective comparison+digits, or head logic or prob")
        if self.head == "logic" and self.objective == "comparison":
            raise UserError("head logic with objective comparison: the answer pred_a <= pred_b comes from digits "
                            "that L_cmp does not train: use objective digits or comparison+digits, or head prob")
        return self

    def to_dict(self) -> dict:
        """As stored: factories of your own by their references, without the plugin it came from."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("plugin", "code")}
        out["extra"] = copy.deepcopy(self.extra)
        for part in ("branch", "head"):
            if callable(out[part]):
                out[part] = plugins.reference(out[part])
        return out


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
