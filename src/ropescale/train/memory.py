"""Two CPU memory savings of the training step that need no change to the model or the maths.

- The optimiser is `torch.optim.AdamW(fused=True)` where torch has the fused kernel (CPU and CUDA): it updates
  each parameter in one pass without the per-parameter temporaries of the loop implementation (and is faster).
- On Linux with glibc, the heap pages that the first forward and backward passes freed go back to the operating
  system before the first optimiser step (`malloc_trim`). glibc keeps freed blocks of up to 32 MiB in its heaps,
  so after the backward pass of a long sequence the process holds hundreds of MiB it no longer uses, and AdamW's
  state (twice the weights, allocated at the first step) would come on top. Later steps reuse the freed blocks
  for the same activations; trimming at every step would make them fault the pages in again (13 % slower on the
  embedded model). The call takes milliseconds and changes nothing else.

`benchmarks/finetune_step.py` measures both against the plain transformers step. `peak_rss_bytes` is the peak that
the fine-tuning log and the benchmarks report on CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import resource
from collections.abc import Iterable
from pathlib import Path

import torch


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def release_freed_memory() -> bool:
    """Return the free pages of glibc's heaps to the operating system (`malloc_trim(0)`). True if memory was
    released; False where there was none, or the C library is not glibc (macOS, musl keep their own behaviour)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def adamw(params: Iterable[torch.nn.Parameter], **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel when every parameter is on a device that has one (CPU, CUDA)."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(params, fused=fused, **kwargs)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's own image (VmHWM of /proc/self/status). Not `ru_maxrss`: a process
    started by subprocess (vfork, then exec) keeps its parent's peak there. ru_maxrss where /proc has no VmHWM."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
