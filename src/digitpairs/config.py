"""Every hyperparameter, in one typed dataclass with its reason; presets are just overrides of it."""

import dataclasses
from dataclasses import dataclass, field

from digitpairs import UserError


@dataclass(frozen=True)
class Config:
    # data
    size: int = 28  # image side: 28 as in the report, 14 (2x2 average pooling) as in the course
    n_pairs: int = 1000  # training pairs per round, drawn from MNIST train (the report: 1000)
    n_test: int = 1000  # test pairs per round, drawn from MNIST test (the report: 1000)
    n_val: int = 0  # of the n_pairs training pairs, held out for validation (model choices are made on these)
    swap: bool = True  # double the training set by swapping the two images (targets recomputed from the classes)
    # optimisation
    epochs: int = 25  # passes over the (swapped) training set
    batch_size: int = 100  # minibatch size (the report: 100)
    lr: float = 1e-3  # Adam learning rate (PyTorch's default)
    # loss
    alpha: float = 0.5  # weight of the auxiliary digit loss, L = L_cmp + alpha * L_digits (the report: 0.5)
    aux_loss: str = "ce"  # auxiliary criterion: "ce" (cross entropy, the report's) or "l2" (MSE softmax vs one-hot)
    # model (the branch: conv(1,c1,k) pool conv(c1,c2,k) pool fc(.,hidden) fc(hidden,10); k = 5 at 28, 3 at 14)
    channels: tuple[int, int] = (16, 32)  # conv widths, sized with hidden to the report's 72k-parameter branch
    hidden: int = 112  # width of the branch's first fully connected layer
    pad: bool = False  # "same" padding in the convolutions: the side shrinks by pooling only (7x7 features at 28)
    head_hidden: int = 20  # width of the comparison head's two hidden layers (20 -> 20 -> 20 -> 1)
    dropout_p: float = 0.5  # dropout probability, where the architecture uses dropout (after fc1 and the head)
    # beyond the report: every lever is off by default (the report's protocol); docs/accuracy.md measures each
    schedule: str = "constant"  # learning rate: "constant" (the report's) or "onecycle" (PyTorch's OneCycleLR:
    #                             30% warm-up to lr, cosine to ~0, Adam's beta1 cycled 0.95 -> 0.85 -> 0.95)
    label_smoothing: float = 0.0  # of the auxiliary digit cross entropy
    shift: float = 0.0  # augmentation, per image and step: random translation up to this fraction of the side,
    rotate: float = 0.0  # rotation up to this many degrees (small: a 6 must not become a 9),
    scale: float = 0.0  # scaling by a factor in [1 - scale, 1 + scale],
    elastic: float = 0.0  # and a smooth random displacement field with this SD (a fraction of the side)
    members: int = 1  # models trained per round, each with its own initialisation, data order and augmentation;
    #                   the round's prediction comes from their averaged probabilities (an ensemble)
    tta: int = 1  # test-time views averaged in the final evaluation (1: the image alone; up to 9: plus its shifts
    #               by one pixel); the per-epoch curves before the last epoch use the image alone
    # reproducibility and speed
    seed: int = 0  # base seed; round r uses seed + r for its pairs, initialisation and data order
    precision: str = "bf16"  # convolutions and matmuls in bfloat16 (weights, Adam, softmax and losses stay fp32):
    #                          1.5x faster here, each architecture's mean within one SD of "fp32" (docs/benchmarks.md)

    def validate(self) -> "Config":
        checks = [
            (self.size in (14, 28), f"size must be 14 or 28, not {self.size}"),
            (self.n_pairs > 0, f"n_pairs must be positive, not {self.n_pairs}"),
            (self.n_test > 0, f"n_test must be positive, not {self.n_test}"),
            (0 <= self.n_val < self.n_pairs, f"n_val must be in [0, n_pairs={self.n_pairs}), not {self.n_val}"),
            (self.epochs > 0, f"epochs must be positive, not {self.epochs}"),
            (self.batch_size > 0, f"batch_size must be positive, not {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, not {self.lr}"),
            (self.alpha >= 0, f"alpha must be >= 0, not {self.alpha}"),
            (self.aux_loss in ("ce", "l2"), f"aux_loss must be 'ce' or 'l2', not {self.aux_loss!r}"),
            (0 <= self.dropout_p < 1, f"dropout_p must be in [0, 1), not {self.dropout_p}"),
            (self.schedule in ("constant", "onecycle"),
             f"schedule must be 'constant' or 'onecycle', not {self.schedule!r}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), not {self.label_smoothing}"),
            (0 <= self.shift <= 0.25, f"shift must be in [0, 0.25] (a fraction of the side), not {self.shift}"),
            (0 <= self.rotate <= 45, f"rotate must be in [0, 45] degrees, not {self.rotate}"),
            (0 <= self.scale < 0.5, f"scale must be in [0, 0.5), not {self.scale}"),
            (0 <= self.elastic <= 0.1, f"elastic must be in [0, 0.1] (a fraction of the side), not {self.elastic}"),
            (1 <= self.members <= 16, f"members must be in [1, 16], not {self.members}"),
            (1 <= self.tta <= 9, f"tta must be in [1, 9], not {self.tta}"),
            (self.seed >= 0, f"seed must be >= 0, not {self.seed}"),
            (self.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', not {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self

    def replace(self, **overrides) -> "Config":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise UserError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Arch:
    """A named architecture: the flags of PairNet. `head` is "mlp" (learned comparison), "logic" (pred_a <= pred_b)
    or "prob" (P(a <= b) > 1/2 under the two predicted digit distributions; trained like "logic")."""
    name: str
    label: str  # the report's name for it, used in tables and figures
    share: bool = True  # one digit branch for both images (weight sharing) or two
    aux: bool = False  # add alpha * the auxiliary digit loss
    bn: bool = False  # BatchNorm after each conv and the first fc layer
    dropout: bool = False  # dropout after the branch's first fc layer and in the head
    head: str = "mlp"
    report: tuple[float, float, int] | None = None  # the report's (test accuracy, SD, #params), if in Table 1
    extra: dict = field(default_factory=dict)  # config overrides this architecture always applies

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


QUICK = {"n_pairs": 200, "n_test": 200, "epochs": 2}  # the whole path in seconds, for tests and dry runs
QUICK_ROUNDS = 2


def quick(cfg: Config) -> Config:
    """The quick preset on top of a study's config (a validation split shrinks with the training pairs)."""
    return cfg.replace(**QUICK, n_val=min(cfg.n_val, QUICK["n_pairs"] // 5))
