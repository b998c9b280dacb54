"""Sequence parallelism (DeepSpeed Ulysses through accelerate): shards, global lengths on every shard, errors.

The unit tests below run in one process. The 2-process tests at the end launch `ropescale finetune
--sequence-parallel 2` with `torch.distributed.run` on CPU (gloo, DeepSpeed's CPU accelerator): accelerate's whole
DeepSpeed path, Ulysses' all-to-all attention and the sharded positions, against one plain process.
"""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ropescale
import ropescale as rs
from ropescale.cli.main import main
from ropescale.data import pose_position_ids
from ropescale.io import read_loss_csv
from ropescale.model_info import spec_for_model
from ropescale.train import FinetuneConfig, finetune
from ropescale.train.loss import IGNORE_INDEX, shift_labels
from ropescale.train.sequence_parallel import (INSTALL, GlobalLength, accelerator_kwargs, check_heads,
                                               check_installed, check_launch, install_global_length,
                                               rotary_modules, shard_rows)
from tests.conftest import tiny_config, tiny_model

PAD = 0


def _cut(size, input_ids, position_ids=None):
    labels = shift_labels(input_ids)
    return [shard_rows(input_ids, labels, position_ids, size, rank, PAD) for rank in range(size)]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_shards_of_a_row_put_together_are_the_row_padded_to_a_multiple_of_n(size):
    ids = torch.arange(10, 24).view(2, 7)
    shards = _cut(size, ids)
    whole = [torch.cat([getattr(s, field) for s in shards], dim=1) for field in ("input_ids", "position_ids", "labels")]
    width = -(-7 // size) * size
    assert all(t.shape == (2, width) for t in whole) and len({s.input_ids.shape for s in shards}) == 1
    assert torch.equal(whole[0][:, :7], ids) and (whole[0][:, 7:] == PAD).all()
    assert torch.equal(whole[2][:, :7], shift_labels(ids)) and (whole[2][:, 6:] == IGNORE_INDEX).all()
    # padding repeats the last position: max(position_ids), which dynamic ropes read, is the unpadded row's
    assert torch.equal(whole[1][:, :7], torch.arange(7).expand(2, 7)) and (whole[1][:, 7:] == 6).all()


def test_a_shards_last_token_is_scored_against_the_next_shards_first():
    ids = torch.arange(100, 108).view(1, 8)
    first, second = _cut(2, ids)
    assert int(first.labels[0, -1]) == int(second.input_ids[0, 0]) == 104


@pytest.mark.parametrize("size", [2, 4])
def test_pose_skipped_positions_survive_the_split(size):
    positions = torch.stack([pose_position_ids(64, 1024, seed, n_chunks=3) for seed in (1, 2)])   # [2, 64]
    shards = _cut(size, torch.zeros(2, 64, dtype=torch.long), positions)
    assert torch.equal(torch.cat([s.position_ids for s in shards], dim=1), positions)
    jumps = [int((torch.diff(s.position_ids, dim=1) > 1).sum()) for s in shards]
    seams = sum(int(((shards[r + 1].position_ids[:, 0] - shards[r].position_ids[:, -1]) > 1).sum())
                for r in range(size - 1))
    assert sum(jumps) + seams == int((torch.diff(positions, dim=1) > 1).sum()) == 4   # 2 skips per row, none lost
    assert all(int(s.position_ids.max()) > 64 for s in shards[size // 2:])   # later shards sit past the window


# ---------------------------------------------------------------------------------------------- rotary length

LONGROPE = {"short_factor": tuple(1.0 + 0.1 * i for i in range(8)), "long_factor": tuple(2.0 + i for i in range(8))}


def _patched(method):
    model = tiny_model("llama")   # L0 64, head_dim 16
    rs.apply(model, spec_for_model(model, method, 4.0, **(LONGROPE if method == "longrope" else {})))
    return model


def _cos_sin(rotary, positions):
    x = torch.zeros(positions.shape[0], positions.shape[1], 64)
    with torch.no_grad():
        return rotary(x, position_ids=positions)


@pytest.mark.parametrize("method", ["dynamic", "dynamic-yarn", "longrope"])
@pytest.mark.parametrize("pose", [False, True])
@pytest.mark.parametrize("size", [2, 4])
def test_every_shard_rotates_with_the_frequencies_of_the_whole_sequence(method, pose, size):
    # the first shard ends below L0 = 64 and the sequence past it: the case where shard-local lengths go wrong
    positions = pose_position_ids(64, 200, seed=0).view(1, -1) if pose else torch.arange(120).view(1, -1)
    model = _patched(method)
    (rotary,) = rotary_modules(model)
    full_cos, full_sin = _cos_sin(copy.deepcopy(rotary), positions)
    top = positions.max()
    local_differs = False
    width = positions.shape[1] // size   # 64 and 120 split evenly: no padding here
    for rank, shard in enumerate(_cut(size, torch.zeros_like(positions), positions)):
        hooked = copy.deepcopy(model)   # a process of its own, with its own dynamic state
        install_global_length(hooked, group_max=lambda local: torch.maximum(local, top))
        cos, sin = _cos_sin(rotary_modules(hooked)[0], shard.position_ids)
        part = slice(rank * width, (rank + 1) * width)
        assert torch.equal(cos, full_cos[:, part]) and torch.equal(sin, full_sin[:, part])
        alone = _cos_sin(copy.deepcopy(rotary), shard.position_ids)[0]   # no hook: the shard's own length
        local_differs |= not torch.allclose(alone, full_cos[:, part])
    assert local_differs, "shard-local positions should pick other frequencies for this method (the pitfall)"


def test_the_hook_passes_other_arguments_and_static_ropes_through():
    model = _patched("yarn")
    (rotary,) = rotary_modules(model)
    positions = torch.arange(50, 90).view(1, -1)
    plain = _cos_sin(rotary, positions)
    handles = install_global_length(model, group_max=lambda local: local + 1000)
    hooked = rotary(torch.zeros(1, 40, 64), positions)   # positional, not keyword
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked))
    for handle in handles:
        handle.remove()
    assert isinstance(GlobalLength(lambda v: v).group_max(torch.tensor(3)), torch.Tensor)


def test_pose_chunks_attend_to_earlier_chunks_in_training(tiny_train_model_dir):
    # transformers 5 reads jumps in position_ids as packed-document boundaries unless a mask is given
    from transformers import AutoModelForCausalLM

    from ropescale.train.loop import training_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_train_model_dir)
    model.config.use_cache = False
    positions = pose_position_ids(64, 128, seed=0).view(1, -1)
    cut = int((torch.diff(positions[0]) > 1).nonzero()[0]) + 1
    ids = torch.randint(5, 4000, (1, 64), generator=torch.Generator().manual_seed(0))
    other = ids.clone()
    other[0, 1] += 1
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, cut:-1] = ids[0, cut + 1:]   # score only the chunk after the skip
    with torch.no_grad():
        a, b = (training_loss(model, x, positions, labels=labels) for x in (ids, other))
    assert not torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("size,heads,kv,error", [
    (2, 4, 2, None), (4, 4, 2, None), (4, 8, 1, None), (3, 4, 2, "4 attention heads"),
    (2, 6, 3, "3 key/value heads"), (8, 8, 3, "3 key/value heads")])
def test_heads_must_split_as_deepspeed_requires(size, heads, kv, error):
    config = tiny_config("llama", num_attention_heads=heads, num_key_value_heads=kv, hidden_size=16 * heads)
    as_dict = config.to_dict()
    for given in (config, as_dict):
        if error is None:
            check_heads(given, size)
        else:
            with pytest.raises(ValueError, match=rf"`sequence_parallel` {size} .*{error}"):
                check_heads(given, size)


def test_launch_must_hold_a_multiple_of_n_processes():
    check_launch(2, 4)
    check_launch(1, 1)
    with pytest.raises(ValueError, match="this is a single process: launch a multiple of 2, e.g. torchrun"):
        check_launch(2, 1)
    with pytest.raises(ValueError, match="`sequence_parallel` 4 must divide the number of processes, 6"):
        check_launch(4, 6)


@pytest.mark.parametrize("installed,word", [
    ({"deepspeed": None, "accelerate": "1.15.0"}, "deepspeed is not installed"),
    ({"deepspeed": "0.17.6", "accelerate": "1.15.0"}, "deepspeed is 0.17.6"),
    ({"deepspeed": "0.19.8", "accelerate": "1.11.0"}, "accelerate is 1.11.0"),
])
def test_missing_or_old_deepspeed_names_the_install_command(installed, word):
    with pytest.raises(ValueError, match=word) as caught:
        check_installed(installed.get)
    assert INSTALL in str(caught.value)
    check_installed({"deepspeed": "0.18.2", "accelerate": "1.12.0"}.get)


def test_deepspeed_settings_come_from_the_run_unless_accelerate_launch_sets_them(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", raising=False)
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", raising=False)
    kwargs = accelerator_kwargs(2, micro_batch=3, grad_accum=4, max_grad_norm=0.5, attn_implementation="sdpa",
                                cuda=False)
    config = kwargs["deepspeed_plugin"].deepspeed_config
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (3, 4)
    assert config["gradient_clipping"] == 0.5 and config["zero_optimization"]["stage"] == 2   # accelerate's default
    assert kwargs["parallelism_config"].sp_size == 2 and kwargs["kwargs_handlers"][0].backend == "gloo"
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")   # accelerate launch --zero_stage 1
    assert accelerator_kwargs(2, 1, 1, None, "sdpa", False)["deepspeed_plugin"].zero_stage == 1
    file = tmp_path / "ds.json"
    file.write_text(json.dumps({"zero_optimization": {"stage": 1}, "gradient_accumulation_steps": 8,
                                "train_micro_batch_size_per_gpu": "auto"}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(file))
    with pytest.raises(ValueError, match="`grad_accum` is 4 but the DeepSpeed config file sets "
                                         "gradient_accumulation_steps to 8"):
        accelerator_kwargs(2, 1, 4, None, "sdpa", False)
    assert accelerator_kwargs(2, 1, 8, None, "sdpa", False)["deepspeed_plugin"].deepspeed_config[
        "train_micro_batch_size_per_gpu"] == 1


def test_cli_says_each_error_in_one_line_with_exit_2(tiny_train_model_dir, text_file, tmp_path, capsys, monkeypatch):
    flags = ["finetune", "--model", str(tiny_train_model_dir), "--data", str(text_file), "--output", str(tmp_path / "o")]
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cases = [(["--sequence-parallel", "0"], {}, "--sequence-parallel must be a positive integer"),
             (["--sequence-parallel", "2"], {}, "--sequence-parallel 2 splits each row over 2 processes"),
             (["--sequence-parallel", "3"], {"WORLD_SIZE": "3"}, "--sequence-parallel 3 must divide the model's 4 "
                                                                 "attention heads")]
    for extra, env, message in cases:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert main(flags + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------- 2 processes

def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(ropescale.__file__).resolve().parents[1]))
    env.pop("ROPESCALE_DEBUG", None)
    return env


CASES = {  # name -> settings; each is one process with the whole batch against 2 processes sharing every row
    "yarn-lora": {"method": "yarn", "lora_rank": 4, "batch_size": 1},   # LoRA adapters + trainable embeddings, norms
    # an odd length (rows padded to 128), 2 rows and 2 micro-steps, a length-dependent rope
    "dynamic-padded": {"method": "dynamic", "seq_len": 127, "batch_size": 2, "grad_accum": 2},
    "pose-dynamic-yarn": {"method": "dynamic-yarn", "pose_window": 64, "batch_size": 2},
}


def _two_processes(settings: dict, output, *extra) -> None:
    """`ropescale finetune --sequence-parallel 2` on 2 CPU processes (torch.distributed.run, gloo)."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ropescale",
           "finetune", *flags, "--sequence-parallel", "2", "--output", str(output), *extra]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _same_losses_and_weights(one, two, steps):
    from safetensors.torch import load_file

    a, b = read_loss_csv(one / "loss.csv"), read_loss_csv(two / "loss.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    for x, y in zip(a, b):
        assert x["tokens"] == y["tokens"] and abs(x["loss"] - y["loss"]) <= 1e-4 * abs(x["loss"])
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for name in w1:   # fp32 rounding: a few ulps of weights of magnitude <= 1 (measured: at most 4.5e-7)
        assert float((w1[name] - w2[name]).abs().max()) <= 8 * torch.finfo(torch.float32).eps, name


def _settings(model_dir, text_file, **extra):
    return dict(model=str(model_dir), data=str(text_file), factor=8.0, lr=1e-3, warmup_steps=1, seed=0, **extra)


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_sequence_parallel_2_gives_the_one_process_losses_and_weights(tiny_train_model_dir, text_file, tmp_path, case):
    settings = _settings(tiny_train_model_dir, text_file, steps=3, **CASES[case])
    _two_processes(settings, tmp_path / "sp")
    one = finetune(FinetuneConfig(**settings, output=str(tmp_path / "one")))
    _same_losses_and_weights(one, tmp_path / "sp", steps=3)


@pytest.mark.integration
def test_a_sequence_parallel_run_resumes_from_its_deepspeed_checkpoint(tiny_train_model_dir, text_file, tmp_path):
    settings = _settings(tiny_train_model_dir, text_file, method="dynamic", save_every=2)
    _two_processes({**settings, "steps": 2}, tmp_path / "sp")
    _two_processes({**settings, "steps": 4}, tmp_path / "sp", "--resume")
    one = finetune(FinetuneConfig(**settings, steps=4, output=str(tmp_path / "one")))
    _same_losses_and_weights(one, tmp_path / "sp", steps=4)
