import os

import pytest
import torch

# 2 cores: keep each test single-threaded so parallel workers and background jobs do not thrash
torch.set_num_threads(int(os.environ.get("ROPESCALE_TEST_THREADS", "1")))


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False)
    kw.update(overrides)
    return LlamaConfig(**kw)


@pytest.fixture
def tiny_llama():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()
