"""Training on several processes with PyTorch's own engine: `torchrun ... -m jmvae train`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup()` joins the process group (gloo on CPU, NCCL on CUDA,
one GPU per rank). --batch-size stays the global batch: every rank draws the same seeded permutation and
takes its own contiguous share of each batch, so the ranks together see exactly the batches one process
would. Gradients are averaged by DistributedDataParallel; only rank 0 writes the run directory.
"""

from __future__ import annotations

import datetime
import faulthandler
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .errors import UserError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def share(self, batch_size: int) -> slice:
        """This rank's rows of a global batch."""
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def device(self, requested: torch.device) -> torch.device:
        if self.active and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested


def from_env() -> Ranks:
    return Ranks(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(device: torch.device) -> Ranks:
    """Join the process group torchrun describes (nothing for a single process)."""
    ranks = from_env()
    if ranks.active:
        # a rank that dies in native code prints where it was (torchrun shows only the signal)
        faulthandler.enable()
    if ranks.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return ranks


def check_batch(ranks: Ranks, batch_size: int) -> None:
    if batch_size % ranks.world:
        raise UserError(
            f"batch-size {batch_size} with {ranks.world} ranks (allowed: a multiple of the number of ranks; "
            "--batch-size is the global batch, split evenly)"
        )


def agree(ranks: Ranks, error: str | None) -> None:
    """Every rank learns whether any rank failed a check, so none is left waiting in a collective."""
    if not ranks.active:
        if error:
            raise UserError(error)
        return
    flags = [None] * ranks.world
    dist.all_gather_object(flags, error)
    first = next((e for e in flags if e), None)
    if first:
        raise UserError(first)


def mean_over_ranks(ranks: Ranks, t: torch.Tensor) -> torch.Tensor:
    if ranks.active:
        t = t.clone()
        dist.all_reduce(t)
        t /= ranks.world
    return t


def wrap(model: torch.nn.Module, device: torch.device, unused: bool) -> DistributedDataParallel:
    """The model in DistributedDataParallel: its forward is the loss; its buffers are constants (one-hot
    tables), so they are not synced before every step. Gradients live in the all-reduce buckets (no second
    copy of them)."""
    ids = [device.index] if device.type == "cuda" else None
    options: dict[str, Any] = dict(
        device_ids=ids, find_unused_parameters=unused, gradient_as_bucket_view=True
    )
    try:
        return DistributedDataParallel(model, forward_sync_buffers=False, **options)
    except TypeError:  # torch before forward_sync_buffers
        return DistributedDataParallel(model, broadcast_buffers=False, **options)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def leave_if_not_main() -> None:
    """End a rank other than 0 as soon as training is saved: it has nothing left to write, and torchrun stops
    every rank when one fails. Its normal exit (process group teardown, interpreter shutdown) aborted about
    once in twenty test runs (SIGABRT in native code: "terminate called without an active exception"), and
    torchrun then killed rank 0 in the middle of its evaluation. os._exit skips all of that; the kernel closes
    the sockets, and rank 0 tears its own group down before it evaluates."""
    ranks = from_env()
    if ranks.active and not ranks.main:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
