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


# tiny random configs of each RoPE architecture ropescale is tested on: 2 layers, hidden 64, L0 = 64
_TINY_COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
TINY_ARCHS = {  # name -> (config class name, overrides)
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {"head_dim": 16, "sliding_window": None}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "gemma": ("GemmaConfig", {"head_dim": 16}),
    "gemma2": ("Gemma2Config", {"head_dim": 16, "sliding_window": 32}),
    "phi3": ("Phi3Config", {"original_max_position_embeddings": 64}),
    # partial rotary 0.25; 2 heads so that head_dim 32 leaves a rotary dim of 8 (4 frequencies)
    "gpt_neox": ("GPTNeoXConfig", {"num_attention_heads": 2, "num_key_value_heads": None, "rotary_pct": 0.25}),
}


def tiny_config(arch: str, **overrides):
    import transformers

    class_name, arch_overrides = TINY_ARCHS[arch]
    kw = {**_TINY_COMMON, **arch_overrides, **overrides}
    kw = {k: v for k, v in kw.items() if v is not None}
    return getattr(transformers, class_name)(**kw)


def tiny_model(arch: str, seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, **overrides), attn_implementation="eager").eval()


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
    """A complete checkpoint directory: a tiny random Llama (L0 64) with the embedded tokenizer (vocab 4096)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    import ropescale

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(ropescale.embedded_model_path())
    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_train_model_dir(tmp_path_factory):
    """Tiny random Llama (L0 16, hidden 32) with the embedded tokenizer: factor 8 trains at 128 tokens."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-train-llama"))


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    """A few KB of the embedded corpus, so tests tokenize little."""
    from ropescale.data import embedded_corpus

    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(embedded_corpus("train")[0].text[:40_000], encoding="utf-8")
    return path


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
