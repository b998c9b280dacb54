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


# ---- a random model that speaks the embedded tokenizer (vocab 4096), for evaluation and CLI tests


@pytest.fixture(scope="session")
def lm_tokenizer():
    from transformers import AutoTokenizer

    from ropescale import embedded_model_path

    return AutoTokenizer.from_pretrained(embedded_model_path())


def tiny_lm_config(tokenizer, **overrides):
    return tiny_llama_config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, **overrides)


@pytest.fixture
def tiny_lm(lm_tokenizer):
    """(random tiny Llama with L0 = 64, the embedded tokenizer)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_lm_config(lm_tokenizer)).eval(), lm_tokenizer


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, lm_tokenizer):
    """A saved checkpoint directory of a random tiny Llama (L0 = 64) with the embedded tokenizer."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_lm")
    LlamaForCausalLM(tiny_lm_config(lm_tokenizer)).save_pretrained(path)
    lm_tokenizer.save_pretrained(path)
    return path
