"""Every hyperparameter, in one typed dataclass with its reason; presets are just overrides of it. No torch."""

import dataclasses
import functools
import inspect
import io
import math
import re
import tokenize
from dataclasses import dataclass

from digitpairs.base.errors import UserError

RUN_OPTIONS = ("device", "cuda_graphs", "matmul_conv")  # Config fields that say how to run, not what: outside a study's identity
MNIST_TRAIN, MNIST_TEST = 60000, 10000  # images in MNIST's splits: a round's pairs are distinct images of a split
MAX_EPOCHS = 1000  # far beyond any study here; a typo such as 10**9 is refused instead of running for years
MAX_SEED = 2**32 - 1  # seeds are stored as SQLite integers and fed to NumPy's SeedSequence: any bound this size works
DEVICE_FORM = re.compile(r"auto|cpu|cuda(:\d{1,4})?")  # no machine has 10,000 GPUs; torch refuses 2^31
CHOICES = {  # the str fields that hold one of a few words, and the words
    "aux_loss": ("ce", "l2"), "schedule": ("constant", "onecycle"), "precision": ("fp32", "bf16")}


def _type_error(f: dataclasses.Field, value) -> str | None:
    """The message when value does not fit the field's type: an int is not a bool, a float is finite and may be
    written as an int, and channels are two ints."""
    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if f.type is float:
        ok, what = integer(value) or isinstance(value, float) and math.isfinite(value), "a finite number"
    elif f.type is int:
        ok, what = integer(value), "an integer"
    elif f.type in (bool, str):
        ok, what = isinstance(value, f.type), "true or false" if f.type is bool else "a string"
    else:  # tuple[int, int]
        ok, what = isinstance(value, tuple) and len(value) == 2 and all(map(integer, value)), "two integers"
    return None if ok else f"{f.name} must be {what}, not {value!r}"


GROUPS = {  # every Config field by what it sets: the sections of `digitpairs run --help`
    "data": ("size", "n_pairs", "n_test", "n_val", "swap", "shift", "rotate", "scale", "elastic"),
    "model": ("channels", "hidden", "pad", "head_hidden", "dropout_p", "members", "tta"),
    "training": ("epochs", "batch_size", "lr", "alpha", "aux_loss", "schedule", "label_smoothing", "seed",
                 "precision"),
    "run options": RUN_OPTIONS,
}


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
    dropout_p: float = 0.5  # dropout probability, where the architecture uses dropout (after the branch's fc1 only)
    # beyond the report: every lever is off by default (the report's protocol); docs/accuracy.md measures each
    schedule: str = "constant"  # learning rate: "constant" (the report's) or "onecycle" (PyTorch's OneCycleLR:
    #                             30% warm-up to lr, cosine to ~0, Adam's beta1 cycled 0.95 -> 0.85 -> 0.95)
    label_smoothing: float = 0.0  # label smoothing of the auxiliary digit cross entropy
    shift: float = 0.0  # augmentation, per image and step: random translation up to this fraction of the side
    rotate: float = 0.0  # augmentation: rotation up to this many degrees (small: a 6 must not become a 9)
    scale: float = 0.0  # augmentation: scaling by a factor in [1 - scale, 1 + scale]
    elastic: float = 0.0  # augmentation: a smooth random displacement field with this SD (a fraction of the side)
    members: int = 1  # models trained per round, each with its own initialisation, data order and augmentation;
    #                   the round's prediction comes from their averaged probabilities (an ensemble)
    tta: int = 1  # test-time views averaged in the final evaluation (1: the image alone; up to 9: plus its shifts
    #               by one pixel); the per-epoch curves before the last epoch use the image alone
    # reproducibility and speed
    seed: int = 0  # base seed; round r uses seed + r for its pairs, initialisation and data order
    precision: str = "bf16"  # "bf16": convolutions and matmuls in bfloat16 (weights, Adam, softmax and losses stay
    #                          fp32): faster on CPUs with bf16 instructions; not 1 point below "fp32" on validation
    #                          pairs wherever 10 rounds can bound it (studies/precision.toml, docs/benchmarks.md)
    device: str = "auto"  # where training runs: "auto" (the GPU when PyTorch sees one), "cpu", "cuda", "cuda:N";
    #                       a run option, not part of a study's identity (a study may be resumed on another device)
    cuda_graphs: bool = False  # on a GPU, each group's training step captured once in a CUDA graph and replayed
    #                            (engine/steps.py): a run option; the command line sets it where training runs on a GPU
    #                            (device.graphs_by_default: 2.8x faster epochs on an H200, docs/benchmarks.md)
    matmul_conv: bool = False  # the convolutions as batched matmuls over unfolded patches (kernels/matmul_conv.py), meant for GPUs,
    #                            where cuDNN's deterministic grouped backward is slow: a run option, off (slower on the
    #                            CPU and on an H200 alike, docs/benchmarks.md)

    def validate(self) -> "Config":
        """Self, or a UserError naming the first field of the wrong type or out of its range."""
        for f in dataclasses.fields(self):
            message = _type_error(f, getattr(self, f.name))
            if message:
                raise UserError(message)
        checks = [
            (self.size in (14, 28), f"size must be 14 or 28, not {self.size}"),
            (1 <= self.n_pairs <= MNIST_TRAIN // 2,
             f"n_pairs must be in [1, {MNIST_TRAIN // 2}] (two distinct training images per pair), not {self.n_pairs}"),
            (1 <= self.n_test <= MNIST_TEST // 2,
             f"n_test must be in [1, {MNIST_TEST // 2}] (two distinct test images per pair), not {self.n_test}"),
            (0 <= self.n_val < self.n_pairs, f"n_val must be in [0, n_pairs={self.n_pairs}), not {self.n_val}"),
            (1 <= self.epochs <= MAX_EPOCHS, f"epochs must be in [1, {MAX_EPOCHS}], not {self.epochs}"),
            (1 <= self.batch_size <= MNIST_TRAIN, f"batch_size must be in [1, {MNIST_TRAIN}], not {self.batch_size}"),
            (0 < self.lr <= 1, f"lr must be in (0, 1], not {self.lr}"),
            (0 <= self.alpha <= 100, f"alpha must be in [0, 100], not {self.alpha}"),
            self._choice("aux_loss"),
            (all(1 <= c <= 512 for c in self.channels), f"channels must be two widths in [1, 512], not {self.channels}"),
            (1 <= self.hidden <= 4096, f"hidden must be in [1, 4096], not {self.hidden}"),
            (1 <= self.head_hidden <= 1024, f"head_hidden must be in [1, 1024], not {self.head_hidden}"),
            (0 <= self.dropout_p < 1, f"dropout_p must be in [0, 1), not {self.dropout_p}"),
            self._choice("schedule"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), not {self.label_smoothing}"),
            (0 <= self.shift <= 0.25, f"shift must be in [0, 0.25] (a fraction of the side), not {self.shift}"),
            (0 <= self.rotate <= 45, f"rotate must be in [0, 45] degrees, not {self.rotate}"),
            (0 <= self.scale < 0.5, f"scale must be in [0, 0.5), not {self.scale}"),
            (0 <= self.elastic <= 0.1, f"elastic must be in [0, 0.1] (a fraction of the side), not {self.elastic}"),
            (1 <= self.members <= 16, f"members must be in [1, 16], not {self.members}"),
            (1 <= self.tta <= 9, f"tta must be in [1, 9], not {self.tta}"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}], not {self.seed}"),
            self._choice("precision"),
            (DEVICE_FORM.fullmatch(self.device) is not None,
             f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self

    def _choice(self, name: str) -> tuple[bool, str]:
        """(whether the field is one of its CHOICES, the message if not)."""
        value, words = getattr(self, name), CHOICES[name]
        return value in words, f"{name} must be {' or '.join(map(repr, words))}, not {value!r}"

    def replace(self, **overrides) -> "Config":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise UserError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.cache  # read from the source once per process (run and reproduce both take the flags)
def comments() -> dict[str, str]:
    """{field: its comment in Config above, in one line}: the comment beside the field joined with the comments
    alone on the lines below it that are indented past their `#` (what the field means; the help of its flag)."""
    names, out, field = {f.name for f in dataclasses.fields(Config)}, {}, None
    for token in tokenize.generate_tokens(io.StringIO(inspect.getsource(Config)).readline):
        if token.type != tokenize.COMMENT:
            continue
        code, text = token.line[:token.start[1]].strip(), token.string[1:]
        if code:
            name = code.split(":")[0]
            field = name if name in names else None
            if field:
                out[field] = text.strip()
        elif field and text.startswith("  "):
            out[field] += " " + text.strip()
        else:
            field = None
    return out


def what_it_trains(config: dict) -> dict:
    """A Config as a dict without its run options (RUN_OPTIONS): what decides its numbers' meaning."""
    return {k: v for k, v in config.items() if k not in RUN_OPTIONS}


QUICK = {"n_pairs": 200, "n_test": 200, "epochs": 2}  # the whole path in seconds, for tests and dry runs
QUICK_ROUNDS = 2
MAX_ROUNDS = 1000  # rounds of a study: far beyond any here (seeds seed .. seed + rounds - 1)


def quick(cfg: Config) -> Config:
    """The quick preset on top of a study's config (a validation split shrinks with the training pairs)."""
    return cfg.replace(**QUICK, n_val=min(cfg.n_val, QUICK["n_pairs"] // 5))
