"""Per pruning iteration: parameters, MACs and measured CPU inference latency vs the unpruned model.

    python benchmarks/pruned_latency.py [--model resnet50] [--size 32] [--iterations 10] [--repeats 5] [--onnx]

Applies the schedule (20% of every inner layer's channels per cut, magnitude scores: latency
depends only on the shapes) and times eval-mode inference at batch 1 and batch 32, interleaving
all models in each repeat and taking medians. Prints each ratio to the unpruned model, and how
close the latency ratio comes to the MAC ratio. With ``--onnx`` every model is also exported as
``swarm.export`` exports it and timed in ONNX Runtime (CPU) the same way, side by side.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from swarm.nodes.models import build_model
from swarm.nodes.shapes import count_macs_and_params
from swarm.server.pruning import prunable_layers, prune_step
from swarm.server.relevance import filter_l1


@torch.inference_mode()
def latency(model, x: torch.Tensor, loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        model(x)
    return (time.perf_counter() - start) / loops


def onnx_runner(model: torch.nn.Module, size: int):
    """The model exported as swarm.export does, as a callable on tensors (ONNX Runtime, CPU)."""
    import onnxruntime as ort

    from swarm.export import to_onnx

    session = ort.InferenceSession(to_onnx(model, {"in_channels": 3, "image_size": size}),
                                   providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x.numpy()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--onnx", action="store_true", help="also time each model in ONNX Runtime")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model({"name": args.model, "stem": "auto"}, 10, 3, args.size).eval()
    example = torch.randn(1, 3, args.size, args.size)
    models = [copy.deepcopy(model)]
    for _ in range(args.iterations):
        prune_step(model, filter_l1(model, prunable_layers(model)), example)
        models.append(copy.deepcopy(model).eval())
    stats = [count_macs_and_params(m, example) for m in models]
    runtimes = {"torch": models}
    if args.onnx:
        runtimes["onnx"] = [onnx_runner(m, args.size) for m in models]
    inputs = {1: example, 32: torch.randn(32, 3, args.size, args.size)}
    loops = {1: 20, 32: 2}
    times = {(r, b): [[] for _ in models] for r in runtimes for b in inputs}
    for runners in runtimes.values():  # warm-up
        for m in runners:
            for x in inputs.values():
                latency(m, x, 1)
    for _ in range(args.repeats):  # every model and runtime in each repeat, so drift hits all alike
        for i in range(len(models)):
            for r, runners in runtimes.items():
                for b, x in inputs.items():
                    times[r, b][i].append(latency(runners[i], x, loops[b]))
    med = {key: [statistics.median(t) for t in values] for key, values in times.items()}
    print(f"{args.model} at {args.size} px, torch {torch.__version__}, {torch.get_num_threads()} threads")
    head = f"{'iter':>4} {'params':>8} {'MACs':>9} {'MAC ratio':>9}"
    for r in runtimes:
        head += f" {r + ' b1 ms':>12} {'ratio':>6} {r + ' b32 ms':>13} {'ratio':>6}"
    print(head)
    for i, (macs, params) in enumerate(stats):
        line = f"{i:>4} {params / 1e6:>7.2f}M {macs / 1e6:>8.1f}M {macs / stats[0][0]:>9.2f}"
        for r in runtimes:
            b1, b32 = med[r, 1], med[r, 32]
            line += f" {b1[i] * 1e3:>12.2f} {b1[i] / b1[0]:>6.2f} {b32[i] * 1e3:>13.1f} {b32[i] / b32[0]:>6.2f}"
        print(line)


if __name__ == "__main__":
    main()
