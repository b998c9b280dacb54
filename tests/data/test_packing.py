"""`tokenize_documents` and `pack`: EOS between documents, exact shapes, a clear error when too short."""

import pytest
import torch

from ropescale.data import Document, pack, tokenize_documents

EOS, BOS = 2, 1


def test_pack_puts_eos_after_each_document_and_drops_the_tail():
    rows = pack([[10, 11, 12], [20, 21], [30, 31, 32, 33]], seq_len=4, eos_id=EOS)
    # stream: 10 11 12 E 20 21 E 30 31 32 33 E  -> 3 full rows
    assert rows.dtype == torch.long and rows.shape == (3, 4)
    assert rows.tolist() == [[10, 11, 12, EOS], [20, 21, EOS, 30], [31, 32, 33, EOS]]


def test_pack_with_bos_starts_every_row_with_it():
    rows = pack([[10, 11, 12], [20, 21, 22, 23, 24]], seq_len=4, eos_id=EOS, bos_id=BOS)
    # stream of 10 tokens, 3 per row after BOS -> 3 rows, 1 token dropped
    assert rows.tolist() == [[BOS, 10, 11, 12], [BOS, EOS, 20, 21], [BOS, 22, 23, 24]]


def test_too_short_corpus_says_how_many_tokens():
    with pytest.raises(ValueError, match="it has 4 tokens .* needs 8"):
        pack([[5, 6, 7]], seq_len=8, eos_id=EOS)


def test_tokenize_documents_adds_no_special_tokens(embedded_tokenizer):
    ids = tokenize_documents(embedded_tokenizer, [Document("a", "Good night, sweet prince."), Document("b", "Hi")])
    assert len(ids) == 2 and embedded_tokenizer.bos_token_id not in ids[0]
    assert embedded_tokenizer.decode(ids[0]) == "Good night, sweet prince."
    rows = pack(ids, seq_len=4, eos_id=embedded_tokenizer.eos_token_id)
    assert (rows == embedded_tokenizer.eos_token_id).sum() >= 1
