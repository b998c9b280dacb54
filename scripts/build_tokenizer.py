"""Train the embedded model's tokenizer: byte-level BPE on the training plays, digits split one per token.

    python scripts/build_tokenizer.py                     # -> src/ropescale/assets/model/tokenizer*.json

Byte-level (GPT-2 style): the 256 byte symbols are in the base vocabulary, so any UTF-8 text encodes, with no
unknown token. `Digits(individual_digits=True)` runs before the byte-level split, so "12345" is always the five
tokens 1 2 3 4 5: a pass key is five tokens whatever its value, which makes copying it a plain induction task.
Special tokens: <pad> = 0, <s> = 1 (BOS), </s> = 2 (EOS). The post-processor prepends <s> to every encoded
text (Llama convention: `tokenizer(text)` is what the model expects at the start of a sequence); no </s> is
appended. The BPE trainer is deterministic for a fixed input order (the plays sorted by name).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from ropescale import embedded_model_path  # noqa: E402
from ropescale.data import embedded_corpus  # noqa: E402

SPECIAL = ["<pad>", "<s>", "</s>"]


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=embedded_model_path())
    args = parser.parse_args()

    texts = [d.text for d in embedded_corpus("train")]
    tok = train_tokenizer(texts, args.vocab_size)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    args.out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(args.out)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"vocab {tok.get_vocab_size()}, training plays: {n_tokens:,} tokens, {n_bytes / n_tokens:.2f} bytes/token")


if __name__ == "__main__":
    main()
