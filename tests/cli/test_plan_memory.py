"""`ropescale plan --gpus G --gpu-memory GB`: the memory part of the plan, on the shipped public configs."""

from pathlib import Path

import pytest

from ropescale.cli.main import main
from ropescale.memory_plan import GiB, Architecture, TrainShape, train_estimate

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
LLAMA3 = str(CONFIGS / "llama-3-8b")


def _plan(capsys, *argv) -> list[str]:
    assert main(["plan", "--model", LLAMA3, "--target-length", "131072", *argv]) == 0
    out = capsys.readouterr().out
    return out[out.index("memory "):].splitlines()


def _grid(lines: list[str]) -> dict[tuple[int, int], tuple[float, bool]]:
    """(ZeRO stage, SP degree) -> (GiB, fits) from the printed grid."""
    header = next(line for line in lines if "does not fit)" in line)
    degrees = [int(part) for part in header.split("SP")[1:]]
    cells = {}
    for line in lines[lines.index(header) + 1:]:
        stage = int(line.split()[0].removeprefix("ZeRO-"))
        for degree, cell in zip(degrees, line.split()[1:]):
            cells[stage, degree] = (float(cell.rstrip("!")), not cell.endswith("!"))
    return cells


def test_llama3_8b_at_128k_on_8x80_fits_with_ulysses_8_and_zero_3(capsys):
    lines = _plan(capsys, "--gpus", "8", "--gpu-memory", "80", "--zero", "3", "--sequence-parallel", "8")
    asked = next(line for line in lines if line.strip().startswith("asked"))
    assert "ZeRO-3, sequence parallel 8" in asked and asked.endswith(": fits")
    assert "weights" in lines[lines.index(asked) + 1] and "activations" in lines[lines.index(asked) + 1]
    grid = _grid(lines)
    assert grid[0, 1][1] is False and grid[3, 8][1] is True   # plain DDP cannot hold it; the recipe's choice can
    shape = TrainShape(seq_len=131072, gpus=8, zero_stage=3, sequence_parallel=8)
    expected = train_estimate(Architecture.from_config(_config()), shape, "cuda").total / GiB
    assert grid[3, 8][0] == pytest.approx(expected, abs=0.05)


def _config():
    import json

    return json.loads((CONFIGS / "llama-3-8b" / "config.json").read_text())


def test_the_smallest_fit_is_the_first_fitting_cell_by_degree_then_stage(capsys):
    lines = _plan(capsys, "--gpus", "8", "--gpu-memory", "80")
    grid = _grid(lines)
    first = next((stage, n) for n in (1, 2, 4, 8) for stage in range(4) if grid[stage, n][1])
    smallest = next(line for line in lines if line.strip().startswith("smallest"))
    assert f"ZeRO-{first[0]}, sequence parallel {first[1]}" in smallest


def test_lora_and_a_shorter_sequence_need_less(capsys):
    full = _grid(_plan(capsys, "--gpus", "8", "--gpu-memory", "80"))
    lora = _grid(_plan(capsys, "--gpus", "8", "--gpu-memory", "80", "--lora-rank", "16"))
    short = _grid(_plan(capsys, "--gpus", "8", "--gpu-memory", "80", "--seq-len", "32768"))
    assert all(short[k][0] < full[k][0] for k in full)
    # LoRA saves the replicated optimiser state; with ZeRO-3 it shards to little and LoRA's extra activations
    # (peft's adapter outputs) can outweigh it
    assert all(lora[0, n][0] < full[0, n][0] for n in (1, 2, 4, 8))


def test_without_gpus_the_plan_prints_no_memory_part(capsys):
    assert main(["plan", "--model", LLAMA3, "--target-length", "131072"]) == 0
    assert "memory " not in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["--gpus", "8"], "--gpu-memory"),
    (["--gpus", "8", "--gpu-memory", "0"], "--gpu-memory"),
    (["--gpus", "8", "--gpu-memory", "80", "--sequence-parallel", "3"], "--sequence-parallel"),
    (["--gpus", "8", "--gpu-memory", "80", "--zero", "4"], "--zero"),
])
def test_bad_memory_flags_are_one_line_exit_2(argv, needle, capsys):
    assert main(["plan", "--model", LLAMA3, "--target-length", "131072", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
