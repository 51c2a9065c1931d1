"""Checkpoints of a group in training: everything that decides its next epoch, so that a resumed group continues
bit for bit where it stopped (on the same machine and device, with the same run options: a resume with another
--cuda-graphs or --matmul-conv continues from the same state, its numbers then differing to rounding).

One file per group, `DIR/group-FIRSTROUND.pt`, replaced atomically (written beside, then renamed): a kill at any
moment leaves the previous complete epoch. It holds the parameters and BatchNorm statistics, Adam's state, the
learning-rate schedule, every member's random generator (data order, augmentation, dropout) and the curves so far,
with the key of what it belongs to (architecture, rounds, seeds, config): a file whose key differs is ignored.
Loaded with torch.load(weights_only=True): tensors and plain data, never code.
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Checkpoints:
    folder: Path  # one folder per unit of work, beside the store
    every: int = 1  # save after every `every` epochs (and never if 0)

    def path(self, rounds: list[int]) -> Path:
        return self.folder / f"group-{rounds[0]}.pt"

    def save(self, rounds: list[int], key: dict, epoch: int, net, opt, sched, curves: list[list[dict]]) -> None:
        if not self.every or epoch % self.every:
            return
        state = {"key": key, "epoch": epoch, "net": net.state_dict(), "opt": opt.state_dict(),
                 "sched": sched.state_dict() if sched is not None else None,
                 "rngs": [g.get_state() for g in net.rngs], "curves": curves}
        path = self.path(rounds)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def remove(self, rounds: list[int]) -> None:
        """Delete the group's checkpoint, and the folders up to checkpoints/ once they are empty."""
        self.path(rounds).unlink(missing_ok=True)
        for tmp in self.folder.glob(f".{self.path(rounds).name}.*.tmp"):  # left by a kill during a save
            tmp.unlink(missing_ok=True)
        for folder in (self.folder, self.folder.parent, self.folder.parent.parent):
            try:
                folder.rmdir()
            except OSError:  # not empty (another group's file), or gone
                return

    def load(self, rounds: list[int], key: dict, net, opt, sched) -> tuple[int, list[list[dict]]]:
        """Restore the group from its checkpoint; return (epochs done, curves so far), or (0, fresh curves)."""
        fresh = 0, [[] for _ in rounds]
        path = self.path(rounds)
        if not path.is_file():
            return fresh
        try:
            state = torch.load(path, map_location=next(net.parameters()).device, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged checkpoint only costs the epochs it held
            return fresh
        if state.get("key") != key or not _fits(state["net"], net.state_dict()):  # another group's, or code's
            return fresh
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        if sched is not None:
            sched.load_state_dict(state["sched"])
        for g, s in zip(net.rngs, state["rngs"], strict=True):
            g.set_state(s.cpu())
        print(f"{self.folder.name} rounds {rounds}: resuming from the checkpoint of epoch {state['epoch']}",
              file=sys.stderr, flush=True)
        return state["epoch"], state["curves"]


def _fits(saved: dict, current: dict) -> bool:
    """The saved parameters have the current model's names and shapes (checked before anything is loaded)."""
    return saved.keys() == current.keys() and all(saved[k].shape == current[k].shape for k in current)
