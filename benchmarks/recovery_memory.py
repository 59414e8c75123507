"""Peak memory and time of ``recover``'s completion (M_rec) on one BraTS-size case.

    python benchmarks/recovery_memory.py --mode sliding --json benchmarks/results/recovery_sliding_cpu.json
    python benchmarks/recovery_memory.py --mode whole --json benchmarks/results/recovery_whole_cpu.json

M_rec is the network ``DSMMTrainer`` builds from the BraTS plan of ``nnunet_dsmm benchmark`` (6 stages,
32-320 features, 128^3 patch), with random weights (cost does not depend on them). The case is
4 x 240 x 240 x 155 voxels with T1ce missing. ``sliding`` is what ``recover`` does (tiles of the
patch size, step 0.5, Gaussian blending); ``whole`` is the earlier behaviour (the volume padded to
the downsampling factor in one forward pass), stopped once the resident set passes ``--limit-gib``.
CPU peak = resident-set peak above what the process held before the completion.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dsmm.benchmark.memory import PeakMemory
from nnunet_dsmm.benchmark.plans import SYNTHETIC_CONFIGURATION, synthetic_plans
from nnunet_dsmm.benchmark.runtime import describe_environment
from nnunet_dsmm.evaluation.recovery import complete_case
from nnunet_dsmm.trainers.dsmm import DSMMTrainer

SHAPE = (240, 240, 155)


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def stop_above(limit: int) -> None:
    """End the process (exit status 3) once its resident set passes ``limit`` bytes."""
    def watch():
        while True:
            if resident_bytes() > limit:
                print(f"resident set above {limit / 1024**3:.1f} GiB: stopped", flush=True)
                os._exit(3)
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("sliding", "whole"), required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--limit-gib", type=float, default=16.0)
    args = parser.parse_args()
    stop_above(int(args.limit_gib * 1024**3))
    os.environ.setdefault("DSMM_TEXT_ENCODER", "untrained")
    plans, dataset_json = synthetic_plans("brats")
    manager = PlansManager(plans)
    config = manager.get_configuration(SYNTHETIC_CONFIGURATION)
    torch.manual_seed(0)
    network = DSMMTrainer.build_network_architecture(manager, config, 4, 3, enable_deep_supervision=False).eval()
    available = np.array([True, True, False, True])
    data = np.random.default_rng(0).standard_normal((4, *SHAPE), dtype=np.float32) * available[:, None, None, None]
    PeakMemory.cpu_exact()
    start = time.perf_counter()
    with PeakMemory(torch.device("cpu")) as memory:
        if args.mode == "sliding":
            completed = complete_case(network, data, available, config.patch_size, "cpu")
        else:
            factors = np.prod(np.array(config.pool_op_kernel_sizes), axis=0).astype(int)
            padded = np.pad(data, [(0, 0)] + [(0, (-s) % f) for s, f in zip(SHAPE, factors)])
            with torch.inference_mode():
                completed = network.complete(torch.from_numpy(padded)[None], torch.from_numpy(available)[None])
            completed = completed[0, :, :SHAPE[0], :SHAPE[1], :SHAPE[2]].numpy()
    seconds = time.perf_counter() - start
    assert completed.shape == data.shape and np.isfinite(completed).all()
    report = {"mode": args.mode, "case_shape": [4, *SHAPE], "patch_size": list(config.patch_size),
              "seconds": seconds, "peak_bytes_above_start": memory.peak,
              "environment": describe_environment(torch.device("cpu"))}
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: report[k] for k in ("mode", "seconds", "peak_bytes_above_start")}))


if __name__ == "__main__":
    main()
