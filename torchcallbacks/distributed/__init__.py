"""Several processes: the process group (`process_group`), FSDP2 sharding (`fsdp`) and the
checkpoints a sharded run writes (`checkpoint`).

Nothing here knows a kind of model. torch's FSDP and distributed-checkpoint modules are
imported only once a module is sharded or a sharded checkpoint is read.

For callbacks: `announce` has rank 0 print a line, whichever process calls it; `rank`,
`world_size` and `is_active` describe the run.
"""

from torchcallbacks.distributed.process_group import announce, is_active, rank, world_size

__all__ = ["announce", "is_active", "rank", "world_size"]
