"""The training step and the epoch, run eagerly or replayed from a CUDA graph.

A step picks each member's minibatch by index from the rounds' data on the device, augments it, runs the net, its
losses and backward, updates the weights with Adam and advances the schedule. Its random draws (augmentation,
dropout masks) are made on the CPU from the members' own generators before the step, in the order the step uses
them (draw()), so that a member's numbers depend neither on the members beside it nor on how the step runs.

`Step` runs it eagerly with torch's Adam (engine/training.py's optimizer: fused, or foreach for the built-in
family on the CPU). `GraphedStep` (the
run option `cuda_graphs`, which the command line turns on where training runs on a GPU) captures it in a CUDA graph once per group, after a few eager warm-up
steps, and then replays it: one graph launch and a few input copies per step instead of a few hundred small kernels,
whose launching bounds this network on a GPU (docs/benchmarks.md). A graph replays fixed addresses and may read nothing back to the host, so its
inputs (indices, draws, and Adam's step-dependent scalars, which OneCycle changes every step) are copied into buffers
of its own before each replay, and Adam is adam() below: torch's update, its changing scalars in a device tensor,
its state kept in the torch optimizer's (checkpoints and a later eager resume read it unchanged). adam() rounds the
first moment's update as a multiply and an add where torch's lerp fuses them, so a graphed group's numbers should agree with
an eager one's to rounding, not bit for bit, and two graphed runs bit for bit (tests/test_device.py checks both where
a GPU is; on an H200 both held, docs/benchmarks.md). A smaller last minibatch (n_val leaves one) runs eagerly through the
same function, as do the warm-up steps.
"""

import threading
import warnings

import torch
import torch.nn.functional as F

from digitpairs import device as devices
from digitpairs.base.errors import UserError, first_line
from digitpairs.data.pairs import augment, augment_draws, target_of
from digitpairs.model import PairNet
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config


class Stopped(Exception):
    """Another group of the same call failed: this one ends too."""


def losses(arch: Arch, cfg: Config, cmp, digits, classes):
    """Per-member (K,) training objective (arch.objective: L_cmp, L_cmp + alpha * L_digits, or L_digits) and
    comparison loss L_cmp for a minibatch.

    cmp (K, B), digits (K, B, 2, 10), classes (K, B, 2)."""
    k = cmp.shape[0]
    l_cmp = F.binary_cross_entropy_with_logits(cmp, target_of(classes.reshape(-1, 2)).view(k, -1),
                                               reduction="none").mean(1)
    if arch.objective == "comparison":
        return l_cmp, l_cmp
    if cfg.aux_loss == "ce":
        l_digits = F.cross_entropy(digits.reshape(-1, 10), classes.reshape(-1), reduction="none",
                                   label_smoothing=cfg.label_smoothing).view(k, -1).mean(1)
    else:  # "l2": mean squared error between the softmax and the one-hot class
        # F.one_hot reads the classes' range back to the host on the CPU: a comparison does not (CUDA graphs)
        onehot = (classes.unsqueeze(-1) == torch.arange(10, device=classes.device)).to(digits.dtype)
        l_digits = (digits.softmax(-1) - onehot).pow(2).reshape(k, -1).mean(1)
    if arch.objective == "digits":  # TransferLearn: the branch learns the digits, the comparison follows from them
        return l_digits, l_cmp
    return l_cmp + cfg.alpha * l_digits, l_cmp


def draw(net: PairNet, cfg: Config, b: int) -> dict[str, torch.Tensor]:
    """A step's random draws for b pairs per member, on the CPU from the members' generators, in the order the step
    uses them: the augmentation's (pairs.augment_draws), then the dropout masks (PairNet.draw_masks)."""
    out = augment_draws(cfg, net.rngs, 2 * b)
    out.update({f"mask{i}": mask for i, mask in enumerate(net.draw_masks(b))})
    return out


def forward(net: PairNet, cfg: Config, data: dict, owner: torch.Tensor, idx: torch.Tensor, draws: dict):
    """Per-member (K*M,) objective and L_cmp on the minibatch idx (K*M, b) of each member's round (owner: member ->
    its round), with draw()'s draws on the device."""
    xb = augment(data["train_x"][owner, idx], cfg, draws=draws)
    drops = net.dropouts()
    for i, d in enumerate(drops):
        d.mask = draws[f"mask{i}"]
    try:
        with devices.autocast(cfg.precision, xb.device):
            cmp, digits = net(xb)
    finally:
        for d in drops:
            d.mask = None
    return losses(net.arch, cfg, cmp.float(), digits.float(), data["train_classes"][owner, idx])


class Step:
    """One training step, eagerly, with the torch optimizer and schedule. sums: per member, the epoch's sums of the
    objective and of L_cmp (train_epoch zeroes them)."""

    def __init__(self, net: PairNet, opt: torch.optim.Optimizer, sched, cfg: Config, data: dict):
        self.net, self.opt, self.sched, self.cfg, self.data = net, opt, sched, cfg, data
        self.dev = data["train_x"].device
        k = data["train_x"].shape[0]
        self.owner = torch.arange(k, device=self.dev).repeat_interleave(len(net.rngs) // k).unsqueeze(1)
        self.sums = torch.zeros(2, len(net.rngs), device=self.dev)

    def __call__(self, idx: torch.Tensor, draws: dict) -> None:
        """idx (K*M, b) on the device; draws as draw() made them, on the CPU."""
        self.eager(idx, draws)
        self.advance()

    def eager(self, idx: torch.Tensor, draws: dict) -> None:
        self.run(idx, {key: devices.upload(t, self.dev) for key, t in draws.items()})

    def advance(self) -> None:
        """The schedule's step."""
        if self.sched is not None:
            self.sched.step()

    def run(self, idx: torch.Tensor, draws: dict) -> None:
        obj, l_cmp = forward(self.net, self.cfg, self.data, self.owner, idx, draws)
        self.opt.zero_grad(set_to_none=True)
        obj.sum().backward()
        self.update()
        self.sums += torch.stack([obj.detach(), l_cmp.detach()])

    def update(self) -> None:
        self.opt.step()


def train_epoch(step: Step, cfg: Config, data: dict, stop: threading.Event | None):
    """One pass over every member's training pairs in its own order; return the per-round (K,) sums over the steps
    of the objective and of L_cmp (a round's: the mean over its members)."""
    net = step.net
    net.train()
    k, n = data["train_x"].shape[:2]
    # each member's own order, drawn from its own (CPU) stream: the same order on every device
    order = devices.upload(torch.stack([torch.randperm(n, generator=g) for g in net.rngs]), step.dev)  # (K*M, N)
    step.sums.zero_()
    for s in range(0, n, cfg.batch_size):
        if stop is not None and stop.is_set():
            raise Stopped
        idx = order[:, s:s + cfg.batch_size]
        step(idx, draw(net, cfg, idx.shape[1]))
    sum_obj, sum_cmp = step.sums.view(2, k, -1).mean(2)
    return sum_obj, sum_cmp


@torch.no_grad()
def adam(params, grads, exp_avgs, exp_avg_sqs, steps, hyper: torch.Tensor, beta2: float, eps: float) -> None:
    """torch's Adam update (no weight decay, no amsgrad) with the step's changing scalars in hyper, a device tensor:
    (1 - beta1, -lr / (1 - beta1^t), sqrt(1 - beta2^t)). Nothing is read back to the host: it can be captured."""
    weight, step_size, bias2_sqrt = hyper[0], hyper[1], hyper[2]
    torch._foreach_add_(steps, 1)
    diff = torch._foreach_sub(grads, exp_avgs)  # exp_avg.lerp_(grad, 1 - beta1), as a multiply and an add
    torch._foreach_mul_(diff, weight)
    torch._foreach_add_(exp_avgs, diff)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(exp_avgs, denom)
    torch._foreach_mul_(update, step_size)
    torch._foreach_add_(params, update)


class GraphedStep(Step):
    """The step replayed from a CUDA graph (the module's docstring). Off a GPU (the tests) it runs the same step on
    the same buffers, without a graph."""

    WARMUP = 3  # eager steps on the capture's stream before the capture (lazy initialisations happen there)

    def __init__(self, net: PairNet, opt: torch.optim.Optimizer, sched, cfg: Config, data: dict):
        super().__init__(net, opt, sched, cfg, data)
        (group,) = opt.param_groups  # adam() is Adam without its options: refuse an optimizer that has them
        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            raise ValueError("GraphedStep's Adam has no weight decay, amsgrad or maximize")
        self.params = [p for p in net.parameters() if p.requires_grad]  # a network of yours may freeze some
        for p in self.params:  # the state as torch's fused Adam keeps it (a resumed one's as loaded)
            state = opt.state[p]
            if not state:
                state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state["step"] = state.get("step", torch.zeros(())).to(self.dev, torch.float32)
        # read once, before any capture; a parameter that never gets a gradient (a network of yours may have one)
        # never steps: every other one steps at every step, so all that stepped share one count
        done = {int(opt.state[p]["step"]) for p in self.params} - {0}
        if len(done) > 1:
            raise ValueError(f"Adam's parameters have taken different numbers of steps: {sorted(done)}")
        self.t = done.pop() if done else 0
        self.hyper = torch.zeros(3, device=self.dev)
        self.inputs: dict | None = None  # the graph's input buffers
        self.graph, self.warm = None, 0
        self.stream = torch.cuda.Stream(self.dev) if self.dev.type == "cuda" else None

    def __call__(self, idx: torch.Tensor, draws: dict) -> None:
        group = self.opt.param_groups[0]
        (beta1, beta2), t = group["betas"], self.t + 1  # torch's formulas, in double on the host
        devices.fill(self.hyper, torch.tensor([1 - beta1, -group["lr"] / (1 - beta1 ** t), (1 - beta2 ** t) ** 0.5]))
        if idx.shape[1] == self.cfg.batch_size:
            self.replay(idx, draws)
        else:
            self.eager(idx, draws)
        self.t = t
        self.advance()

    def advance(self) -> None:
        if self.sched is None or self.sched.last_epoch:
            return super().advance()
        with warnings.catch_warnings():  # its first step checks that the torch optimizer stepped; adam() steps instead
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
            self.sched.step()

    def replay(self, idx: torch.Tensor, draws: dict) -> None:
        """Copy the inputs into the graph's buffers and replay it (warming up and capturing it first)."""
        if self.inputs is None:
            self.inputs = {"idx": torch.empty_like(idx)} | {
                key: torch.empty(v.shape, dtype=v.dtype, device=self.dev) for key, v in draws.items()}
        self.inputs["idx"].copy_(idx)
        for key, v in draws.items():
            devices.fill(self.inputs[key], v)
        args = self.inputs["idx"], {key: v for key, v in self.inputs.items() if key != "idx"}
        if self.graph is not None:
            self.graph.replay()
        elif self.stream is None:
            self.run(*args)
        elif self.warm < self.WARMUP:
            self.stream.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(self.stream):
                self.run(*args)
            torch.cuda.current_stream(self.dev).wait_stream(self.stream)
            self.warm += 1
        else:
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=self.stream):
                    self.run(*args)
            except RuntimeError as e:  # an operation this torch cannot capture: one line, not a traceback
                while isinstance(e.__context__, RuntimeError):  # the cause, not the capture's end failing after it
                    e = e.__context__
                raise UserError(f"CUDA graphs: capturing the training step failed ({first_line(e)}); run with "
                                "--no-cuda-graphs") from e
            self.graph = graph
            graph.replay()

    def update(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        states = [self.opt.state[p] for p in params]
        group = self.opt.param_groups[0]
        adam(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
             [s["step"] for s in states], self.hyper, group["betas"][1], group["eps"])
