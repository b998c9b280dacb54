import pytest

from ropescale import embedded_model_path


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_path())
