"""Scaling: trials per hour on 1 vs 2 Ray nodes, and 1 vs N concurrent trials on one node.

Every layout runs the same work (the same space, trials, epochs and data, FIFO: no trial is
stopped early) as a real search joined to a real local Ray cluster (Ray's multi-node test
cluster: each node its own raylet and object store), and the script prints trials/hour and the
speed-up over one trial at a time. With `--gpus-per-trial 1 0.5 0.25` (GPU machines) it also
runs one GPU node at each fraction and prints trials per GPU-hour.

    python benchmarks/scaling.py --num-samples 6 --max-epochs 2 --subset 3000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import ray
from ray.cluster_utils import Cluster

from ecab_tune.search import SearchConfig, load_space, run_search
from ecab_tune.search.config import space_data


@dataclass(frozen=True)
class Layout:
    name: str
    nodes: tuple[dict, ...]  # each node's resources (num_cpus, num_gpus)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


def cpu_layouts(cpus: int) -> list[Layout]:
    one = {"num_cpus": 1}
    return [
        Layout("1 node, 1 trial at a time", (one,)),
        Layout(f"1 node, {cpus} concurrent trials", ({"num_cpus": cpus},)),
        Layout(f"{cpus} nodes, 1 trial each", (one,) * cpus),
    ]


def gpu_layouts(fractions: list[float]) -> list[Layout]:
    node = {"num_cpus": 8, "num_gpus": 1}
    return [
        Layout(f"1 GPU, {f:g} GPU per trial", (node,), cpus_per_trial=1, gpus_per_trial=f)
        for f in fractions
    ]


def run_layout(layout: Layout, args: argparse.Namespace, storage: str) -> float:
    """Seconds for the whole search on a fresh cluster of `layout`."""
    cluster = Cluster(initialize_head=True, head_node_args=layout.nodes[0])
    for node in layout.nodes[1:]:
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        cfg = SearchConfig(
            space=args.space,
            name=layout.name.replace(" ", "_").replace(",", ""),
            storage=storage,
            data=space_data(load_space(args.space), subset=args.subset),
            num_samples=args.num_samples,
            max_epochs=args.max_epochs,
            scheduler="fifo",
            cpus_per_trial=layout.cpus_per_trial,
            gpus_per_trial=layout.gpus_per_trial,
            address=cluster.address,
            dashboard=False,
        )
        start = time.perf_counter()
        run_search(cfg)
        return time.perf_counter() - start
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="quick")
    parser.add_argument("--num-samples", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=3000)
    parser.add_argument("--cpus", type=int, default=2, help="nodes / concurrent trials to try")
    parser.add_argument("--gpus-per-trial", type=float, nargs="*", default=[])
    args = parser.parse_args()
    layouts = gpu_layouts(args.gpus_per_trial) if args.gpus_per_trial else cpu_layouts(args.cpus)
    seconds = {}
    with tempfile.TemporaryDirectory() as storage:
        for layout in layouts:
            seconds[layout.name] = run_layout(layout, args, storage)
            print(f"[scaling] {layout.name}: {seconds[layout.name]:.0f} s", flush=True)
    base = next(iter(seconds.values()))
    print(
        f"\n{args.num_samples} trials x {args.max_epochs} epochs on {args.subset} images "
        f"({args.space} space, FIFO), the same work in every layout"
    )
    print(f"{'layout':<34}{'wall s':>8}{'trials/h':>10}{'speed-up':>10}")
    for name, wall in seconds.items():
        per_hour = args.num_samples * 3600 / wall
        print(f"{name:<34}{wall:>8.0f}{per_hour:>10.0f}{base / wall:>9.2f}x")


if __name__ == "__main__":
    main()
