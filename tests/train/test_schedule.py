import math

import pytest
import torch

from ropescale.train.schedule import lr_factor, make_scheduler


def test_warmup_is_linear_and_starts_above_zero():
    assert [lr_factor(s, "constant", 4, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_and_cosine_decay_after_warmup():
    assert lr_factor(2, "linear", 2, 12) == 1.0 and lr_factor(7, "linear", 2, 12) == pytest.approx(0.5)
    assert lr_factor(7, "cosine", 2, 12) == pytest.approx(0.5)
    assert lr_factor(11, "cosine", 2, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


def test_scheduler_drives_the_optimizer():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, "cosine", 2, 6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:2] == [1.0, 2.0] and lrs[2] == 2.0 and lrs[-1] < lrs[3]


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "step", 0, 3)
