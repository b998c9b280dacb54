"""Perplexity: chunked equals the model's own loss, windows score the right positions, bits per byte."""

import math

import pytest
import torch

from ropescale.data import pack
from ropescale.evaluate import PerplexityTask, evaluate
from ropescale.evaluate.perplexity import score_windows, token_byte_lengths, window_nll, windows
from ropescale.train.loss import IGNORE_INDEX


def test_chunked_nll_equals_the_models_own_loss(tiny_llama):
    ids = torch.randint(0, 97, (2, 50), generator=torch.Generator().manual_seed(0))
    total, n = window_nll(tiny_llama, ids, chunk_size=7)  # chunks that do not divide the length
    with torch.no_grad():
        reference = tiny_llama(ids, labels=ids).loss.item()
    assert n == 2 * 49
    assert total / n == pytest.approx(reference, abs=1e-5)


def test_non_overlapping_windows_are_packed_rows_scoring_every_token_after_bos():
    stream = list(range(10, 40))
    ids, labels = windows(stream, 8, bos_id=1)
    assert torch.equal(ids, pack([stream[:-1]], 8, eos_id=stream[-1], bos_id=1))
    assert torch.equal(labels[:, :-1], ids[:, 1:]) and (labels[:, -1] == IGNORE_INDEX).all()


@pytest.mark.parametrize("bos", [1, None])
@pytest.mark.parametrize("stride", [1, 3, 7])
def test_sliding_windows_score_each_token_once_with_at_least_length_minus_stride_context(bos, stride):
    length, stream = 8, list(range(100, 140))
    ids, labels = windows(stream, length, bos_id=bos, stride=stride)
    scored = []
    for k in range(len(ids)):
        positions = (labels[k] != IGNORE_INDEX).nonzero().flatten().tolist()
        if k > 0:
            assert positions == list(range(length - 1 - stride, length - 1))  # the last `stride` targets
            assert all(p + 1 >= length - stride for p in positions)  # context: everything before in the window
        scored += labels[k, positions].tolist()
    first = 0 if bos is not None else 1  # without BOS the first stream token is never a target
    assert scored == stream[first : first + len(scored)]  # every token once, in order, no gaps


def test_sliding_stride_out_of_range_and_short_text_are_clear_errors():
    with pytest.raises(ValueError, match="`stride`"):
        windows(list(range(50)), 8, bos_id=1, stride=8)
    with pytest.raises(ValueError, match="`lengths` 64.*only 20 tokens"):
        windows(list(range(20)), 64, bos_id=1)


def test_max_windows_caps_the_windows():
    ids, _ = windows(list(range(100)), 8, bos_id=1, max_windows=3)
    assert ids.shape == (3, 8)


def test_token_bytes_sum_to_the_texts_utf8_length(lm_tokenizer):
    text = "Où est la reine? — Ophelia 🌹, said he.\nThe end."
    ids = lm_tokenizer.encode(text, add_special_tokens=False)
    lengths = token_byte_lengths(lm_tokenizer)
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    assert lengths[lm_tokenizer.eos_token_id] == 0 and lengths[lm_tokenizer.bos_token_id] == 0


def test_bits_per_byte_of_a_uniform_model_is_log2_vocab_times_tokens_over_bytes(tiny_lm):
    model, tokenizer = tiny_lm
    with torch.no_grad():
        model.lm_head.weight.zero_()  # logits all 0: every token costs ln V nats
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."
    stream = tokenizer.encode(text, add_special_tokens=False)
    ids, labels = windows(stream, 16, bos_id=tokenizer.bos_token_id)
    score = score_windows(model, ids, labels, token_byte_lengths(tokenizer))
    scored_text = "".join(tokenizer.decode(row[1:]) for row in ids.tolist())  # every token after BOS
    vocab = len(tokenizer)
    assert score.tokens == ids.shape[0] * 15 and score.bytes == len(scored_text.encode("utf-8"))
    nll, ppl, bpb = score.measurements(len(ids))
    assert nll.value == pytest.approx(math.log(vocab), rel=1e-6)
    assert ppl.value == pytest.approx(vocab, rel=1e-5)
    assert bpb.value == pytest.approx(score.tokens * math.log2(vocab) / score.bytes, rel=1e-6)


def test_perplexity_task_writes_three_metrics_per_length_and_a_spec_changes_the_numbers(tiny_lm, tmp_path):
    import ropescale as rs
    from ropescale.model_info import spec_for_model

    model, tokenizer = tiny_lm
    task = PerplexityTask(lengths=[32, 128], max_windows=2)
    rows = evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", label="tiny", progress=False)
    assert [(r.length, r.metric) for r in rows] == [(n, m) for n in (32, 128)
                                                    for m in ("nll", "perplexity", "bits_per_byte")]
    assert all(r.task == "perplexity" and r.depth is None and r.method == "default" for r in rows)
    nll = {r.length: r.value for r in rows if r.metric == "nll"}
    spec = spec_for_model(model, "linear", 4.0)
    scaled = evaluate(task, model, tokenizer=tokenizer, spec=spec, output=tmp_path / "r.jsonl", label="tiny",
                      progress=False)
    assert {r.method for r in scaled} == {"linear"} and rs.RopeSpec(**scaled[0].settings["rope"]) == spec
    assert {r.length: r.value for r in scaled if r.metric == "nll"}[128] != nll[128]


def test_max_tokens_scores_the_same_text_at_every_length(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    task = PerplexityTask(lengths=[32, 128], max_tokens=512, data="embedded")
    rows = evaluate(task, model, tokenizer=tokenizer, output=tmp_path / "r.jsonl", label="tiny", progress=False)
    tokens = {r.length: r.extra["tokens"] for r in rows if r.metric == "nll"}
    windows_ = {r.length: r.extra["windows"] for r in rows if r.metric == "nll"}
    assert windows_ == {32: 512 // 31, 128: 512 // 127}   # BOS + 31 / 127 stream tokens per window
    # each length scores the first ~512 stream tokens: they differ by less than one window's ragged tail
    assert abs(tokens[32] - tokens[128]) < 128
    assert rows[0].settings["max_tokens"] == 512
    assert "max_tokens" not in PerplexityTask(lengths=[32]).settings()   # old rows keep their cell keys


def test_max_tokens_shorter_than_a_window_is_named(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="`max_tokens` 100 is shorter than one window of length 128"):
        evaluate(PerplexityTask(lengths=[32, 128], max_tokens=100), model, tokenizer=tokenizer,
                 output=tmp_path / "r.jsonl", progress=False)
