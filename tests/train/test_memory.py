"""The training step's CPU memory settings: fused AdamW where torch has it; glibc's mmap threshold fixed."""

import platform

import pytest
import torch

from ropescale.train.memory import adamw, release_freed_memory


def test_adamw_is_fused_on_cpu_and_steps_like_the_loop_implementation():
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused = adamw(a.parameters(), lr=1e-2, betas=(0.9, 0.95))
    loop = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.95), foreach=False)
    assert fused.defaults["fused"] is True
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_adamw_falls_back_without_a_fused_kernel():
    half = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64, device="meta"))
    assert not adamw([half], lr=1e-3).defaults["fused"]


def _rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_freed_memory_returns_freed_heap_pages():
    import ctypes

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    big = 2 << 20
    libc.free(libc.malloc(16 << 20))   # freeing a mapped 16 MiB block raises glibc's mmap threshold to 16 MiB
    blocks = [libc.malloc(big) for _ in range(200)]   # heap blocks, side by side
    for block in blocks:
        ctypes.memset(block, 1, big)       # resident
    for block in blocks[::2]:
        libc.free(block)                   # free, but between live blocks: the heap cannot shrink, still resident
    before = _rss_mib()
    assert release_freed_memory() is True
    after = _rss_mib()
    for block in blocks[1::2]:
        libc.free(block)
    assert after < before - 100            # 200 MiB were freed but resident
