"""GGUF export: a copy of the base file whose metadata carries the extension, tensors byte for byte."""

import numpy as np
import pytest

from ropescale import RopeSpec

gguf = pytest.importorskip("gguf")
from ropescale.export.gguf import read_metadata, write_extended_gguf  # noqa: E402


@pytest.fixture
def base_gguf(tmp_path):
    """A tiny llama GGUF: a few keys (one stale yarn key), two tensors (one quantized layout kept as bytes)."""
    path = tmp_path / "base.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_context_length(256)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(64)
    w.add_key_value("llama.rope.scaling.attn_factor", 1.5, gguf.GGUFValueType.FLOAT32)  # stale: must go
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "c"])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((8, 8)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tensors(path):
    return {t.name: bytes(t.data.tobytes()) for t in gguf.GGUFReader(str(path)).tensors}


def test_yarn_is_written_as_llamacpp_keys_and_tensors_are_copied(base_gguf, tmp_path):
    out = tmp_path / "out.gguf"
    spec = RopeSpec(method="yarn", factor=8.0, original_max_position_embeddings=256)
    write_extended_gguf(base_gguf, spec, 2048, 64, out)
    keys = read_metadata(out)["keys"]
    assert keys["llama.context_length"] == 2048
    assert keys["llama.rope.scaling.type"] == "yarn"
    assert keys["llama.rope.scaling.factor"] == pytest.approx(8.0)
    assert keys["llama.rope.scaling.original_context_length"] == 256
    assert "llama.rope.scaling.attn_factor" not in keys  # yarn's default temperature is llama.cpp's built-in
    assert keys["tokenizer.ggml.tokens"] == ["a", "b", "c"]
    assert tensors(out) == tensors(base_gguf)


def test_longrope_and_llama3_add_their_factor_tensors(base_gguf, tmp_path):
    long = RopeSpec(method="longrope", factor=4.0, original_max_position_embeddings=256,
                    short_factor=tuple([1.0] * 32), long_factor=tuple(np.linspace(1, 4, 32).tolist()))
    write_extended_gguf(base_gguf, long, 1024, 64, tmp_path / "long.gguf")
    meta = read_metadata(tmp_path / "long.gguf")
    assert meta["keys"]["llama.rope.scaling.type"] == "longrope"
    assert meta["tensors"]["rope_factors_long.weight"] == ((32,), "F32")
    read = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "long.gguf")).tensors}
    np.testing.assert_allclose(read["rope_factors_long.weight"].data, np.linspace(1, 4, 32), rtol=1e-6)
    l3 = RopeSpec(method="llama3", factor=8.0, original_max_position_embeddings=256, low_freq_factor=1.0,
                  high_freq_factor=4.0)
    write_extended_gguf(base_gguf, l3, 2048, 64, tmp_path / "l3.gguf")
    meta = read_metadata(tmp_path / "l3.gguf")
    assert meta["tensors"]["rope_freqs.weight"] == ((32,), "F32")
    assert meta["keys"]["llama.rope.scaling.type"] == "none"


@pytest.mark.parametrize("spec, words", [
    (RopeSpec(method="dynamic", factor=4.0, original_max_position_embeddings=256), "no dynamic scaling"),
    (RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=256, beta_fast=16.0), "beta"),
])
def test_what_gguf_cannot_carry_is_refused_with_the_reason(base_gguf, tmp_path, spec, words):
    with pytest.raises(ValueError, match=words):
        write_extended_gguf(base_gguf, spec, 1024, 64, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_a_base_files_scaling_tensor_goes_with_its_scaling(base_gguf, tmp_path):
    # a Llama 3.1 GGUF carries llama3's scaling as rope_freqs.weight, which llama.cpp applies under any scaling
    # type: a yarn export on top of it keeps none of it, a llama3 export its own
    l3 = RopeSpec(method="llama3", factor=8.0, original_max_position_embeddings=256, low_freq_factor=1.0,
                  high_freq_factor=4.0)
    write_extended_gguf(base_gguf, l3, 2048, 64, tmp_path / "l31.gguf")
    yarn = RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=256)
    write_extended_gguf(tmp_path / "l31.gguf", yarn, 1024, 64, tmp_path / "y.gguf")
    assert set(read_metadata(tmp_path / "y.gguf")["tensors"]) == {"token_embd.weight", "blk.0.attn_q.weight"}
    l3_twice = RopeSpec(method="llama3", factor=2.0, original_max_position_embeddings=256, low_freq_factor=1.0,
                        high_freq_factor=4.0)
    write_extended_gguf(tmp_path / "l31.gguf", l3_twice, 512, 64, tmp_path / "l3b.gguf")
    read = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "l3b.gguf")).tensors}
    assert list(read).count("rope_freqs.weight") == 1 and float(np.max(read["rope_freqs.weight"].data)) == 2.0


def test_yarn_betas_equal_to_the_builtin_ones_are_written(base_gguf, tmp_path):
    spec = RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=256, beta_fast=32.0,
                    beta_slow=1.0)  # as DeepSeek-style configs state them
    write_extended_gguf(base_gguf, spec, 1024, 64, tmp_path / "b.gguf")
    assert read_metadata(tmp_path / "b.gguf")["keys"]["llama.rope.scaling.type"] == "yarn"


def test_a_length_beyond_32_bits_is_refused_and_leaves_no_file(base_gguf, tmp_path):
    spec = RopeSpec(method="yarn", factor=4.0, original_max_position_embeddings=256)
    with pytest.raises(ValueError, match="32-bit"):
        write_extended_gguf(base_gguf, spec, 2 ** 32, 64, tmp_path / "big.gguf")
    assert list(tmp_path.iterdir()) == [base_gguf]


def test_dequantized_copy_holds_f32_tensors_equal_to_the_dequantized_base(tmp_path):
    from ropescale.export.gguf import write_dequantized_gguf

    path = tmp_path / "q.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_uint32("general.file_type", 7)
    weights = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    q = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.ffn_up.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    write_dequantized_gguf(path, tmp_path / "f32.gguf")
    (t,) = gguf.GGUFReader(str(tmp_path / "f32.gguf")).tensors
    assert t.tensor_type == gguf.GGMLQuantizationType.F32
    expected = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(np.asarray(t.data).reshape(expected.shape), expected)
    np.testing.assert_allclose(expected, weights, atol=0.05)  # and Q8_0 is close to the original
    assert "general.file_type" not in read_metadata(tmp_path / "f32.gguf")["keys"]
