import pytest

from ropescale import embedded_model_path


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_path())


@pytest.fixture(scope="session")
def other_tokenizer():
    """A second tokenizer unlike the embedded one: byte-level BPE of 400 tokens, digits merged, no BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ropescale.data.fillers import essay_sentences

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(essay_sentences()) + ["1234567 9876543 a3f1-c2e4"],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["</s>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")
