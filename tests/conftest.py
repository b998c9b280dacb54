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


# ---- tokenizer-compatible tiny models for fine-tuning and CLI runs (train, cli)
TINY_L0 = 16  # tiny models extend 16 -> 128 tokens with factor 8


def save_tiny_model(path, seed=0, **overrides):
    """A random Llama with the embedded tokenizer (vocab 4096), saved as a checkpoint directory."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import ropescale

    tok = AutoTokenizer.from_pretrained(ropescale.embedded_model_path())
    kw = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=TINY_L0, rope_theta=10000.0, tie_word_embeddings=False,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    kw.update(overrides)
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**kw)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def make_tiny_model():
    return save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    """A few KB of the embedded corpus, so tests tokenize little."""
    from ropescale.data import embedded_corpus

    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(embedded_corpus("train")[0].text[:40_000], encoding="utf-8")
    return path
