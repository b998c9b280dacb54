"""PoSE position ids: train on a short window whose positions are skipped to span the target length.

Positional Skip-wisE training (Zhu et al., ICLR 2024, arXiv 2309.10400, §3.2): a window of W tokens is cut into
chunks; every chunk keeps consecutive positions, and chunk i is shifted by a skip bias u_i with
u_{i-1} <= u_i <= L_t - W, so that positions stay increasing and below the target length L_t while the relative
distances between chunks reach up to L_t - 1. The text itself stays contiguous (the paper's content bias
v_i = 0), which the authors report works as well as sampling content gaps.

As in the authors' code (`src/train_pose.py::train_preprocess_function_pose`, `pos_ids[rt1:] += rt`), the first
chunk keeps bias 0: the model sees the start of the sequence at position 0, as it does at inference, and the
distance between the first and the last chunk covers the whole target range.
"""

from __future__ import annotations

import random

import torch


def pose_position_ids(window: int, target_len: int, seed: int, n_chunks: int = 2) -> torch.LongTensor:
    """Position ids [window] for one PoSE training row: increasing, in [0, target_len), first position 0.

    Cut points between chunks are uniform over [1, window - 1] (each chunk non-empty); the skip biases of chunks
    1..n-1 are sorted uniform integers in [0, target_len - window]. Pure: the same `seed` gives the same ids.
    """
    if window < 1 or target_len < window:
        raise ValueError(f"PoSE needs 1 <= window <= target length, got window {window} and target {target_len}")
    if not 1 <= n_chunks <= window:
        raise ValueError(f"PoSE n_chunks must be in [1, window={window}], got {n_chunks}")
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, window), n_chunks - 1))                     # chunk starts after the first
    biases = sorted(rng.randint(0, target_len - window) for _ in range(n_chunks - 1))
    positions = torch.arange(window, dtype=torch.long)
    for cut, bias in zip(cuts, biases):
        # biases are non-decreasing, so adding each one from its cut onwards keeps the ids increasing
        positions[cut:] += bias - (positions[cut] - cut)
    return positions


def pose_batch_position_ids(window: int, target_len: int, seeds: list[int], n_chunks: int = 2) -> torch.LongTensor:
    """One row of `pose_position_ids` per seed: [len(seeds), window]."""
    return torch.stack([pose_position_ids(window, target_len, s, n_chunks) for s in seeds])
