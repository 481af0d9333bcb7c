"""Benchmark: the mnist-vae gradient measurement, vectorised (ghost norms) vs the GST repository's way.

    python tests/benchmarks/vae_measure_speed.py [--estimator "stgs(tau=0.5)"] [--images 1000]
        [--samples 100 1000] [--checkpoint PATH] [--device cpu|cuda] [--json PATH]

The GST repository measures variance with a full forward and backward pass of the whole
VAE per draw (``--engine loop`` here). The vectorised engine runs the encoder once,
draws the logits gradients of many estimates in one batched decoder pass, and gets each
draw's encoder-gradient norm and inner product with the reference from ghost norms,
without forming per-draw parameter gradients. Both see identical noise and give the same
statistics (tests/test_mnist_vae.py checks them draw by draw).

Each configuration runs in a fresh process, the two engines alternating, so the times
are side by side on the same machine state; peak memory is the process's peak resident
set size minus its peak before the measurement started (on CUDA: the peak of
allocated GPU memory during the measurement, from torch.cuda.max_memory_allocated). The runner's chunk (the noise
held at once, ``--chunk-size``) is fixed, so between S = 100 and S = 1000 only S changes. Also printed: the floor, the
decoder's forward and backward to the logits that every draw needs. Nothing is
asserted: performance is reported, not tested.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, time, torch
from gradbench.registry import estimators, tasks
from gradbench.references import resolve_reference
from gradbench.engine import MeasureConfig, measure
from gradbench.tasks.mnist_vae import checkpoint
from gradbench.tasks.mnist_vae.problem import VAEProblem
from gradbench.tasks.mnist_vae.train import build_model, images

args = json.loads({args!r})
task = tasks.build("mnist-vae")
device = torch.device(args["device"])
cuda = device.type == "cuda"
sync = torch.cuda.synchronize if cuda else (lambda: None)
model = build_model(task, device, torch.float32, torch.Generator(device).manual_seed(0))
if args["checkpoint"]:
    model.load_state_dict(checkpoint.load(args["checkpoint"], task.architecture())["model"])
_, _, test, _ = images(task, device, torch.float32)
problem = VAEProblem(model, test[: args["images"]])
reference = resolve_reference(problem, "reinforce", 40, 0)  # only its shape matters for the cost
estimator = estimators.build(args["estimator"])
config = MeasureConfig(args["samples"], 1, chunk_size=args["chunk_size"], engine=args["engine"])
measure(problem, estimator, reference.gradient, MeasureConfig(2, 2, engine=args["engine"]))  # warm up
if cuda:
    sync(); torch.cuda.reset_peak_memory_stats(device)
before = torch.cuda.memory_allocated(device) / 1024 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = measure(problem, estimator, reference.gradient, config, reference.variance)
sync()
seconds = time.perf_counter() - start
peak = torch.cuda.max_memory_allocated(device) / 1024 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
var = result.groups["encoder"].metrics["variance_per_element"].value
print(json.dumps({{"seconds": seconds, "peak_mb": peak / 1024, "extra_mb": (peak - before) / 1024,
                  "variance_per_element": var, "threads": torch.get_num_threads()}}))
"""

FLOOR = r"""
import json, time, torch
from gradbench.registry import tasks
from gradbench.tasks.mnist_vae.train import build_model, images
args = json.loads({args!r})
task = tasks.build("mnist-vae")
device = torch.device(args["device"])
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
model = build_model(task, device, torch.float32, torch.Generator(device).manual_seed(0)).requires_grad_(False)
_, _, test, _ = images(task, device, torch.float32)
x = test[: args["images"]]
z = torch.nn.functional.one_hot(torch.randint(10, (5, x.shape[0], 30), device=device), 10).float().requires_grad_(True)
def once():
    torch.autograd.grad(model.bce(x, z).sum(), [z])
once()
sync()
start = time.perf_counter()
for _ in range(4):
    once()
sync()
print(json.dumps({{"ms_per_draw": (time.perf_counter() - start) / 20 * 1000}}))
"""


def child(code: str, **args) -> dict:
    out = subprocess.run([sys.executable, "-c", code.format(args=json.dumps(args))], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimator", default="stgs(tau=0.5)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--checkpoint", default=None, help="a mnist-vae checkpoint (default: the initial model)")
    parser.add_argument("--chunk-size", type=int, default=8,
                        help="estimates per runner chunk (the noise held at once); fixed so S is all that changes")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    common = dict(estimator=args.estimator, images=args.images, checkpoint=args.checkpoint,
                  chunk_size=args.chunk_size, device=args.device)
    floor = child(FLOOR, **common)["ms_per_draw"]
    memory = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    print(f"{args.estimator}, B = {args.images} images, float32, {args.device}, runner chunk {args.chunk_size} estimates")
    print(f"floor (decoder forward + backward to the logits): {floor:.1f} ms per draw")
    print(f"{'S':>6} {'engine':>11} {'seconds':>8} {'ms/draw':>8} {memory:>12} {'extra MB':>9} {'threads':>8}")
    figures = {"device": args.device, "images": args.images, "estimator": args.estimator, "floor_ms_per_draw": floor,
               "runs": []}
    for samples in args.samples:
        rows = {engine: child(CHILD, samples=samples, engine=engine, **common) for engine in ("vectorized", "loop")}
        figures["runs"] += [{"samples": samples, "engine": e, "ms_per_estimate": 1000 * r["seconds"] / samples, **r}
                            for e, r in rows.items()]
        for engine, r in rows.items():
            print(f"{samples:>6} {engine:>11} {r['seconds']:>8.1f} {1000 * r['seconds'] / samples:>8.1f} "
                  f"{r['peak_mb']:>12.0f} {r['extra_mb']:>9.0f} {r['threads']:>8}")
        ratio = rows["loop"]["seconds"] / rows["vectorized"]["seconds"]
        same = rows["loop"]["variance_per_element"] / rows["vectorized"]["variance_per_element"]
        print(f"{samples:>6} loop / vectorized time: {ratio:.2f}x (variance per element ratio {same:.6f})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
