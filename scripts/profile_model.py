"""Profile a network where users feel it: one 512² inference pass and one training step (batch 16, 128²).

    python scripts/profile_model.py [--model dgno-small-face] [--threads 2] [--top 25]
    python scripts/profile_model.py --scaling [--size 768]     # per module: 1 thread against --threads

Prints the torch profiler's top operators and a per-module wall-time table (forward hooks), so that a
speed change is argued from where the time goes, not guessed. ``--scaling`` times every module on one
thread and on ``--threads`` instead: a module that gains nothing from the second thread (or loses,
as the selective scan did before stop 21) is where parallelism is wasted.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile


def module_timers(model: torch.nn.Module, depth: int = 4):
    """Wall time per named module (``depth`` dots deep), accumulated with forward pre/post hooks."""
    totals: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        if not name or name.count(".") >= depth:
            continue

        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            totals[name] += time.perf_counter() - starts.pop(name)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return totals, handles


def scaling(model: torch.nn.Module, x: torch.Tensor, threads: int, passes: int = 5) -> None:
    """Mean wall time per module over ``passes`` passes on one thread and on ``threads``."""
    per_threads = {}
    for n in (1, threads):
        torch.set_num_threads(n)
        with torch.inference_mode():
            for _ in range(2):
                model(x)  # warm-up at this thread count
            totals, handles = module_timers(model)
            for _ in range(passes):
                model(x)
        for h in handles:
            h.remove()
        per_threads[n] = {name: seconds / passes for name, seconds in totals.items()}
    one, many = per_threads[1], per_threads[threads]
    print(f"per module, ms: 1 thread, {threads} threads, speed-up")
    for name in sorted(one, key=lambda k: -many[k])[:40]:
        print(f"  {name:40s} {one[name] * 1e3:7.1f} {many[name] * 1e3:7.1f} {one[name] / many[name]:5.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="shipped name or checkpoint path (default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--scaling", action="store_true", help="per-module times, 1 thread vs --threads")
    args = parser.parse_args(argv)

    from napari_dgno import load_model
    from napari_dgno.memory import keep_freed_memory

    keep_freed_memory()  # as `dgno` runs: without it, page faults blur every timing below
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu").net.eval()
    x = torch.rand(1, 1, args.size, args.size)
    if args.scaling:
        scaling(model, x, args.threads)
        return
    with torch.inference_mode():
        model(x)  # warm-up
        t0 = time.perf_counter()
        model(x)
        print(f"inference {args.size}²: {time.perf_counter() - t0:.3f} s")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    totals, handles = module_timers(model)
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    print("per module (inference):")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:30]:
        print(f"  {name:40s} {seconds:.3f} s")

    model.train()
    batch = torch.rand(16, 1, 128, 128)
    for i in range(3):
        t0 = time.perf_counter()
        out = model.forward_multiscale(batch)
        loss = sum(o.abs().mean() for o in out)
        loss.backward()
        print(f"train step {i}: {time.perf_counter() - t0:.3f} s")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss = sum(o.abs().mean() for o in model.forward_multiscale(batch))
        loss.backward()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
