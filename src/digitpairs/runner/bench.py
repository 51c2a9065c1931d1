"""`digitpairs bench`: a plain PyTorch training loop against the engine, same architecture and rounds, one process.
For an architecture with a network of yours, the reference trains your module itself, one model at a time.

Reference: the loop a user would write, independent of the engine: a plain nn.Module (nn.Conv2d, nn.MaxPool2d,
nn.BatchNorm, nn.ReLU, nn.Dropout, nn.Linear, as the architecture needs), one model at a time, fp32, NCHW,
PyTorch's default threads, Adam on minibatches with the same losses and epochs, evaluation after every epoch.
Its network is the engine's (pooling before BatchNorm and ReLU, the same head), so the two differ in how they
compute, not in what.
Engine: train() as the studies use it (engine/training.py): rounds in groups of at most a study's group size, one group per
thread at a time (a study keeps every core busy with a unit per worker; here the groups are balanced over the
threads instead), channels_last, the compiled kernels (kernels/), in the given precision. A network of yours that
trains one round at a time on the CPU (groups of 1) trains as `digitpairs run` trains a study's units by default:
on worker processes of one thread each, one per thread (at most one per round), set up once (runner/units.py:
freed memory kept for reuse, base/procfs.py), each round a unit. Threads
started anew for each short call would time their own warm-up (oneDNN's primitives are made per thread).
Both train the same rounds on the same pairs; the figures are model-epochs per second and effective GFLOP/s (the
model's analytic FLOPs over wall time) beside the machine's measured matmul rate, with the machine's name and its
load average, since a busy machine slows either side. Each loop first trains one untimed epoch on the same shapes,
so that what a process does once (CUDA's start, cuDNN's plans, loading the compiled kernels) is left out of both;
what each training call does (building the model, capturing a CUDA graph) is timed.
"""

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch
import torch.nn.functional as F
from torch import nn

from digitpairs import device as devices
from digitpairs.base.errors import UserError
from digitpairs.data import mnist
from digitpairs.data.pairs import augment, round_for, target_of
from digitpairs.engine import group_rounds, train
from digitpairs.kernels import library
from digitpairs.model import average, create_model, own_path
from digitpairs.runner import units
from digitpairs.spec import plugins
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config
from digitpairs.spec.shapes import flops_per_pair, kernel_size
from digitpairs.spec.studyfile import Variant


def matmul_gflops(dtype: torch.dtype, device: str = "cpu", n: int = 2048, seconds: float = 1.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    a @ b  # warm-up
    sync()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        sync()
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


class PlainNet(nn.Module):
    """The architecture as a plain module: images (B, 2, S, S) -> comparison logit (B,), digit logits (B, 2, 10)."""

    def __init__(self, arch: Arch, cfg: Config):
        super().__init__()
        ks, (c1, c2), h = kernel_size(cfg), cfg.channels, cfg.hidden
        pad = ks // 2 if cfg.pad else 0
        side = ((cfg.size + 2 * pad - ks + 1) // 2 + 2 * pad - ks + 1) // 2

        def cnn():
            norm = nn.BatchNorm2d if arch.bn else lambda c: nn.Identity()
            return nn.Sequential(
                nn.Conv2d(1, c1, ks, padding=pad, bias=not arch.bn), nn.MaxPool2d(2), norm(c1), nn.ReLU(),
                nn.Conv2d(c1, c2, ks, padding=pad, bias=not arch.bn), nn.MaxPool2d(2), norm(c2), nn.ReLU(),
                nn.Flatten(), nn.Linear(c2 * side * side, h, bias=not arch.bn),
                nn.BatchNorm1d(h) if arch.bn else nn.Identity(), nn.ReLU(),
                nn.Dropout(cfg.dropout_p) if arch.dropout else nn.Identity(), nn.Linear(h, 10))

        def branch():  # yours as your factory builds it, or the report's CNN
            return arch.factory("branch")(cfg.size) if arch.branch is not None else cnn()

        self.arch = arch
        self.branches = nn.ModuleList(branch() for _ in range(1 if arch.share else 2))
        hh = cfg.head_hidden  # "logic" and "prob": the comparison follows from the digits, no parameters
        self.head = (nn.Sequential(nn.Linear(20, hh), nn.ReLU(), nn.Linear(hh, hh), nn.ReLU(), nn.Linear(hh, 1))
                     if arch.head == "mlp" else arch.factory("head")() if "head" in arch.own_parts else None)

    def forward(self, x):
        b, _, s, _ = x.shape
        if len(self.branches) == 1:  # weight sharing: both images through the one branch, as one batch
            digits = self.branches[0](x.reshape(b * 2, 1, s, s)).view(b, 2, 10)
        else:
            digits = torch.stack([br(x[:, i:i + 1]) for i, br in enumerate(self.branches)], 1)
        probs = digits.softmax(-1)
        if self.head is not None:
            return self.head(probs.view(b, 20)).reshape(b), digits
        p_le = self.p_le(probs).clamp(1e-6, 1 - 1e-6)  # "logic", "prob": P(a <= b) as the comparison's logit
        return torch.log(p_le) - torch.log1p(-p_le), digits

    @staticmethod
    def p_le(probs):
        """(B, 2, 10) digit probabilities -> (B,) P(first digit <= second), the two digits independent."""
        return torch.einsum("bi,ij,bj->b", probs[:, 0], torch.ones(10, 10, device=probs.device).triu(), probs[:, 1])

    def predict(self, p_cmp, probs):
        """(B,) bool: the first digit <= the second, by the architecture's head, from the comparison probability
        (B,) and the digit probabilities (B, 2, 10)."""
        if self.arch.head == "logic":
            return probs[:, 0].argmax(-1) <= probs[:, 1].argmax(-1)
        if self.arch.head == "prob":
            return self.p_le(probs) > 0.5
        return p_cmp > 0.5


def plain_loss(arch: Arch, cfg: Config, cmp, digits, classes):
    """The training objective of one model on a minibatch (the same terms as train.losses)."""
    if arch.learns_digits:
        if cfg.aux_loss == "ce":
            l_digits = F.cross_entropy(digits.reshape(-1, 10), classes.reshape(-1), label_smoothing=cfg.label_smoothing)
        else:
            l_digits = (digits.softmax(-1) - F.one_hot(classes, 10).float()).pow(2).mean()
        if arch.objective == "digits":
            return l_digits
    l_cmp = F.binary_cross_entropy_with_logits(cmp, target_of(classes))
    return l_cmp + cfg.alpha * l_digits if arch.learns_digits else l_cmp


def plain_run(arch: Arch, cfg: Config, data, seed: int, device: str) -> float:
    """Train one model on one round's data the plain way; return its final test accuracy."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = PlainNet(arch, cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    x, classes = data.train_x.to(device), data.train_classes.to(device)
    test_x, test_classes = data.test_x.to(device), data.test_classes.to(device)
    steps = -(-len(x) // cfg.batch_size)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps)
             if cfg.schedule == "onecycle" else None)
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x), generator=g).to(device)
        for s in range(0, len(x), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            xb = augment(x[idx][None], cfg, [g])[0]
            cmp, digits = net(xb)
            loss = plain_loss(arch, cfg, cmp, digits, classes[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        net.eval()
        views = cfg.tta if epoch == cfg.epochs - 1 else 1
        with torch.no_grad():  # the model's probabilities over the test-time views, as the engine averages them
            p_cmp, probs = average(lambda x: tuple(t[None] for t in net(x[0])), test_x[None], 1, views)
            truth = test_classes[:, 0] <= test_classes[:, 1]
            acc = (net.predict(p_cmp[0], probs[0]) == truth).float().mean().item()
    return acc


def balanced_groups(n_rounds: int, threads: int, most: int) -> list[int]:
    """Sizes of groups of at most `most` rounds covering n_rounds, as many for each thread, near-equal."""
    n = min(n_rounds, threads * -(-n_rounds // (threads * most)))
    return [n_rounds // n + (g < n_rounds % n) for g in range(n)]


def engine_mode(cfg: Config) -> str:
    return cfg.precision + ", CUDA graphs" * cfg.cuda_graphs + ", matmul convolutions" * cfg.matmul_conv


def run(arch: Arch, cfg: Config, rounds: int, data_dir=None, log=print, device: str = "cpu") -> float:
    """Print the comparison; return the speedup (engine model-epochs/s over the reference's). device: where both
    train ("cpu" or "cuda[:N]")."""
    if cfg.members != 1:
        raise UserError(f"bench compares single models: members must be 1 (the architecture sets {cfg.members})")
    dev = devices.resolve(device)
    m = mnist.load(data_dir, log=lambda *a: None)
    datas = [round_for(m, cfg, r) for r in range(rounds)]
    seeds = [cfg.seed + r for r in range(rounds)]
    n_train = datas[0].train_x.shape[0]
    # per model-epoch: forward + backward (3x forward) on the training pairs, forward on the test pairs
    flops = (create_model(arch, cfg).flops_per_pair() if arch.own else flops_per_pair(arch, cfg)) * (
        3 * n_train + cfg.n_test)
    threads = 1 if dev.type == "cuda" else torch.get_num_threads()
    size = group_rounds(arch, cfg, dev)
    groups = balanced_groups(rounds, threads, size)
    log(f"bench {arch.name}: {rounds} rounds x {cfg.epochs} epochs at {cfg.size}x{cfg.size}, "
        f"{flops / 1e9:.1f} GFLOP per model-epoch; the engine's groups {groups}")
    if arch.own:
        mode, why, _ = own_path(arch, cfg, dev)
        log(f"your network: {mode} in the engine{f' ({why})' if why else ''}; the reference trains your module "
            "as your factory builds it")
    kernels = ("PyTorch's" if dev.type != "cpu" else "compiled" if library() else
               "PyTorch's (not built: no working C compiler, or no writable cache)")
    log(f"machine: {devices.name(dev)}, {torch.get_num_threads()} threads; matmul rate fp32 "
        f"{matmul_gflops(torch.float32, dev):.0f} GFLOP/s, bf16 {matmul_gflops(torch.bfloat16, dev):.0f} GFLOP/s; "
        f"the engine's pooling, first convolution and BatchNorm: {kernels} (kernels/)")
    looped = arch.own and dev.type == "cpu" and size == 1
    workers = threads if looped and threads > 1 else 0
    if workers:
        workers = min(workers, rounds)
        log(f"the engine: each round a unit on {workers} worker processes of one thread each, as `digitpairs run` "
            "trains a study's units")
    log("warm-up: one untimed epoch of each loop (the reference on one round, the engine on its groups)")
    engine, close = engine_loop(arch, cfg, datas, seeds, groups, dev, workers, data_dir)
    try:
        plain_run(arch, cfg.replace(epochs=1), datas[0], seeds[0], dev)
        engine(1)
        rates = timed({"reference": lambda: [plain_run(arch, cfg, d, s, dev) for d, s in zip(datas, seeds)],
                       "engine": lambda: engine(cfg.epochs)}, rounds * cfg.epochs, flops, engine_mode(cfg), log)
    except BaseException:  # Ctrl-C among them: the workers end at once
        close(at_once=True)
        raise
    close(at_once=False)
    speedup = rates["engine"] / rates["reference"]
    log(f"speedup {speedup:.2f}")
    return speedup


def engine_loop(arch: Arch, cfg: Config, datas: list, seeds: list[int], groups: list[int], dev, workers: int,
                data_dir):
    """(train(epochs) -> the rounds' test accuracies, close(at_once)): the engine in this process, its groups on
    threads; or, with `workers`, each round a unit on that many worker processes (runner/units.py's set-up, one
    thread each), where the rounds draw their pairs as in this process (round_for) and the same seeds."""
    if not workers:
        return (lambda epochs: [r.test_acc for r in train(arch, cfg.replace(epochs=epochs), datas, list(range(len(
            datas))), seeds, groups=groups, device=dev)], lambda at_once: None)
    ctx = mp.get_context("spawn")
    with units.interrupts_blocked():  # the workers ignore Ctrl-C, and end with this process
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=units.worker_init, initargs=(
            data_dir, 1, ctx.RawValue("q", 0), ctx.Lock(), os.getpid(), tuple(plugins.loaded())))

    before = set(mp.active_children())

    def rounds(epochs: int) -> list[float]:
        v = Variant(arch.name, arch.name, arch, cfg.replace(epochs=epochs, device=str(dev)))
        try:
            with units.interrupts_blocked():
                futures = [pool.submit(units.run_unit, units.Unit(v, ((r,),))) for r in range(len(datas))]
            return [res.test_acc for f in futures for res in f.result()[1]]
        except BrokenProcessPool:
            raise UserError("a worker process of the bench died (out of memory? killed?): run it again, with "
                            "fewer threads (OMP_NUM_THREADS) or --rounds") from None

    def close(at_once: bool) -> None:  # at_once: on Ctrl-C or an error (the workers ignore Ctrl-C)
        pool.shutdown(wait=not at_once, cancel_futures=True)
        for p in set(mp.active_children()) - before if at_once else ():
            p.kill()

    return rounds, close


def timed(loops: dict, model_epochs: int, flops: float, mode: str, log) -> dict[str, float]:
    """Each loop run once, timed, one after the other: its model-epochs per second, printed with its figures."""
    rates = {}
    for name, fn in loops.items():
        load = os.getloadavg()[0]
        start = time.perf_counter()
        accs = fn()
        wall = time.perf_counter() - start
        rates[name] = model_epochs / wall
        log(f"{name:<9} {wall:7.1f} s  {rates[name]:6.2f} model-epochs/s  {rates[name] * flops / 1e9:6.1f} GFLOP/s "
            f"effective  (mean test acc {sum(accs) / len(accs):.4f}, {mode if name == 'engine' else 'fp32'}; "
            f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)")
    return rates
