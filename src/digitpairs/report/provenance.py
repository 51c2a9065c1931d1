"""The report's table of the code versions and devices behind a study's runs."""

import collections


def _device(run: dict) -> str:
    """The run's device, and the run options it trained with where they were on."""
    cfg = (run.get("config") or {}).get("config") or {}
    options = [text for key, text in (("cuda_graphs", "CUDA graphs"), ("matmul_conv", "matmul convolutions"))
               if cfg.get(key)]
    return ", ".join([run["device"] or "(not recorded)", *options])


def provenance(runs: list[dict]) -> list[dict]:
    """The code versions, devices and operators behind the runs, each with its count of runs (report.json)."""
    keys = ("package_version", "code_hash", "git_commit", "torch_version", "device", "kernels")
    count = collections.Counter(tuple(r.get(k) for k in keys) for r in runs)
    return [dict(zip(keys, key)) | {"runs": n} for key, n in sorted(count.items(), key=str)]


def provenance_blocks(runs: list[dict]) -> list[tuple]:
    """The code versions and devices that made the runs, with a warning where a study mixes code versions."""
    count = collections.Counter((r["package_version"], r["code_hash"] or "(not recorded)", (r["git_commit"] or "")[:12],
                                 r["torch_version"], _device(r), r.get("kernels") or "(not recorded)") for r in runs)
    blocks = [("h2", "Code and devices"),
              ("table", ["digitpairs", "Code hash", "Git commit", "torch", "Device", "Operators", "Runs"],
               [[*key, str(n)] for key, n in sorted(count.items())])]
    codes = {key[:2] for key in count}
    if len(codes) > 1:
        blocks += [("p", (f"Warning: this study mixes runs of {len(codes)} code versions (digitpairs version and "
                          "hash of the code that decides the numbers): a difference between variants may come from the "
                          "code. Run the study again under a new --study name to compare runs of one code."))]
    if len({r.get("kernels") for r in runs if r.get("kernels")}) > 1:
        blocks += [("p", ("Warning: this study mixes runs trained on the compiled kernels and on PyTorch's operators, "
                          "whose sums differ in the last bits (a machine without a working C compiler trained some)."))]
    blocks.append(("p", ("Operators: on the CPU, the compiled C kernels of digitpairs where they built, else PyTorch's "
                         "(kernels/build.py); on a GPU, PyTorch's.")))
    return blocks
