"""Every stage and variant under DistributedDataParallel, on CPU: 2 processes, gloo.

Each rank builds the trainer and calls its own ``initialize`` as ``nnUNetv2_train -num_gpus 2`` does
(nnU-Net's batch split, SyncBatchNorm conversion, DDP wrap), then runs the trainer's real
``train_step`` on a batch of its own. The one change: nnU-Net wraps with ``device_ids=[rank]``, which
DDP accepts for GPU modules only; here the same wrap has no ``device_ids`` (CPU modules).
"""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from nnunet_dsmm.benchmark.batches import batch_for, synthetic_batches
from tests.conftest import build_trainer as build

TRAINERS = ["DSMMBaselineTrainer", "DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMPretrainNoDATrainer",
            "DSMMTrainer",
            "DSMMTrainerNoCTD", "DSMMTrainerFrozenRecovery", "DSMMTrainerAvailableKD", "DSMMTrainerBinaryCode",
            "DSMMTrainerDetachedKD", "DSMMTrainerLowMemory", "DSMMFinetuneDATrainer", "DSMMTrainerNoPGMA",
            "DSMMTrainerAdaptedKD", "DSMMTrainerSelfKD", "DSMMTrainerUnconditionedHeads"]
#: stage 2 draws random spatial masks per sample, so one process and two cannot draw the same ones
RANDOM_PER_SAMPLE = {"DSMMPretrainTrainer", "DSMMPretrainNoDATrainer"}


def module_of(trainer) -> torch.nn.Module:
    return trainer.network.module if isinstance(trainer.network, DistributedDataParallel) else trainer.network


def global_batch(trainer, scenario: str) -> dict:
    """Two samples. ``mixed``: sample 0 complete, sample 1 misses channels 1 and 2. ``single``: one
    channel each (modality dropout then has one choice, so one process and two draw the same)."""
    batch = synthetic_batches(trainer, 1, 2, 1.0, torch.Generator().manual_seed(0))[0]
    available = {"mixed": [[True] * 4, [True, False, False, True]],
                 "single": [[True, False, False, False], [False, False, True, False]]}[scenario]
    batch["available"] = torch.tensor(available)
    batch["data"] = batch["data"] * batch["available"][:, :, None, None, None]
    return batch


def rank_batch(batch: dict, rank: int) -> dict:
    return {k: ([t[rank:rank + 1] for t in v] if isinstance(v, list) and torch.is_tensor(v[0]) else
                v[rank:rank + 1]) for k, v in batch.items()}


def frozen_state(trainer) -> dict[str, torch.Tensor]:
    """Weights that no loss may change: the earlier stages, and M_rec where the variant keeps it fixed."""
    state = {f"stage.{role.name}.{k}": v.clone() for role, network in trainer.stage_networks.items()
             for k, v in network.state_dict().items()}
    recovery = getattr(module_of(trainer), "recovery", None)
    if recovery is not None and not type(trainer).refines_recovery():
        state.update({f"recovery.{k}": v.clone() for k, v in recovery.state_dict().items()})
    return state


def reference_step(name: str, root: Path) -> dict:
    """One process, the concatenated batch: the initial weights and the gradients of one step."""
    torch.manual_seed(0)
    trainer = build(name, root / "single")
    initial = copy.deepcopy(module_of(trainer).state_dict())
    batch = global_batch(trainer, "single")
    torch.manual_seed(1)
    trainer.train_step(batch_for(trainer, batch))
    grads = {n: p.grad.clone() for n, p in module_of(trainer).named_parameters() if p.grad is not None}
    return {"initial": initial, "grads": grads}


def worker(rank: int, names: list[str], root: str, references: dict[str, dict | None]) -> None:
    """Every trainer of ``names`` in turn, in one process group of two ranks (started once: a process pair
    costs more than the steps of a tiny network)."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer

    def ddp_without_device_ids(module, device_ids=None, **kwargs):
        return DistributedDataParallel(module, **kwargs)

    nnunet_trainer.DDP = ddp_without_device_ids
    # a collective that one rank never joins (an unused parameter, say) fails after a minute instead of hanging
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        for name in names:
            trains_like_one_process(rank, name, Path(root) / name, references[name])
    finally:
        dist.destroy_process_group()


def trains_like_one_process(rank: int, name: str, root: Path, reference: dict | None) -> None:
    """Two steps of ``name`` on this rank: the ranks' weights stay equal and frozen networks frozen; and,
    from the reference's initial weights, this rank's gradients are those of one process on both samples."""
    torch.manual_seed(0)
    trainer = build(name, root / f"rank{rank}")
    assert trainer.is_ddp and isinstance(trainer.network, DistributedDataParallel) and trainer.batch_size == 1
    frozen = frozen_state(trainer)
    for step in range(2):  # rank 0's sample is complete, rank 1's misses channels (M_rec on one rank only)
        trainer.train_step(batch_for(trainer, rank_batch(global_batch(trainer, "mixed"), rank)))
        flat = torch.cat([p.detach().flatten() for p in module_of(trainer).parameters()])
        gathered = [torch.empty_like(flat) for _ in range(2)]
        dist.all_gather(gathered, flat)
        assert torch.equal(gathered[0], gathered[1]), f"{name}: weights differ between ranks after step {step}"
    after = frozen_state(trainer)
    assert all(torch.equal(frozen[k], after[k]) for k in frozen), f"{name}: a frozen network changed"
    assert all(not p.requires_grad for network in trainer.stage_networks.values() for p in network.parameters())
    if reference is not None:
        module_of(trainer).load_state_dict(reference["initial"])
        trainer.optimizer.state.clear()
        torch.manual_seed(1)
        trainer.train_step(batch_for(trainer, rank_batch(global_batch(trainer, "single"), rank)))
        grads = {n: p.grad for n, p in module_of(trainer).named_parameters() if p.grad is not None}
        expected = {n: g for n, g in reference["grads"].items() if g.abs().sum() > 0}
        assert set(expected) <= set(grads), f"{name}: {sorted(set(expected) - set(grads))[:3]} got no gradient"
        for n, g in expected.items():
            assert torch.allclose(grads[n], g, rtol=1e-3, atol=1e-6), f"{name}: gradient of {n} differs"


def train_under_ddp(names: list[str], root: Path) -> None:
    references = {name: None if name in RANDOM_PER_SAMPLE else reference_step(name, root / name) for name in names}
    mp.spawn(worker, args=(names, str(root), references), nprocs=2, join=True)


#: one trainer per stage in the quick tier; every other variant under DDP in the full one
QUICK = ["DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainer"]


def test_every_stage_trains_under_ddp_like_one_process(tmp_path):
    train_under_ddp(QUICK, tmp_path)


@pytest.mark.slow
def test_every_variant_trains_under_ddp_like_one_process(tmp_path):
    train_under_ddp([name for name in TRAINERS if name not in QUICK], tmp_path)
