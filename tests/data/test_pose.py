import pytest
import torch

from ropescale.data.pose import pose_batch_position_ids, pose_position_ids


@pytest.mark.parametrize("window,target,chunks", [(16, 128, 2), (64, 64, 2), (32, 1000, 3), (8, 8, 1)])
def test_positions_increase_start_at_zero_and_stay_below_target(window, target, chunks):
    for seed in range(200):
        pos = pose_position_ids(window, target, seed, chunks)
        assert pos.shape == (window,) and pos.dtype == torch.long
        assert pos[0] == 0
        assert (pos.diff() >= 1).all()
        assert pos.max() < target


def test_pure_and_seeded():
    assert torch.equal(pose_position_ids(32, 512, 7), pose_position_ids(32, 512, 7))
    assert not all(torch.equal(pose_position_ids(32, 512, 7), pose_position_ids(32, 512, s)) for s in range(8, 20))


def test_two_chunks_are_each_consecutive():
    pos = pose_position_ids(64, 4096, 3)
    jumps = (pos.diff() > 1).nonzero().view(-1)
    assert len(jumps) <= 1  # one skip between the two chunks (or none when the bias is 0)


def test_relative_distances_cover_the_target_range():
    window, target = 32, 2048
    far = [int(pose_position_ids(window, target, s).max()) for s in range(500)]
    # the largest distance seen (last position - first position 0) reaches the top of the target range ...
    assert max(far) >= 0.95 * target
    # ... and distances are spread over the range, not stuck near the window
    assert sum(f > target // 2 for f in far) > 100
    assert sum(f < target // 2 for f in far) > 100


def test_window_equal_to_target_is_plain_positions():
    assert torch.equal(pose_position_ids(16, 16, 0), torch.arange(16))


def test_batch_stacks_rows():
    batch = pose_batch_position_ids(16, 256, [1, 2, 3])
    assert batch.shape == (3, 16)
    assert torch.equal(batch[1], pose_position_ids(16, 256, 2))


@pytest.mark.parametrize("window,target,chunks", [(0, 10, 2), (20, 10, 2), (4, 10, 5), (4, 10, 0)])
def test_bad_arguments(window, target, chunks):
    with pytest.raises(ValueError, match="PoSE"):
        pose_position_ids(window, target, 0, chunks)
