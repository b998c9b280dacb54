"""Text data for every command: the bundled corpus, loaders for user text, packing, passkey prompts."""

from ropescale.data.corpus import EVAL_PLAYS, Document, embedded_corpus
from ropescale.data.loaders import load_texts
from ropescale.data.packing import pack, tokenize_documents
from ropescale.data.passkey import PasskeyPrompt, passkey_prompt, passkey_trials
from ropescale.data.pose import pose_batch_position_ids, pose_position_ids

__all__ = [
    "Document",
    "EVAL_PLAYS",
    "PasskeyPrompt",
    "embedded_corpus",
    "load_texts",
    "pack",
    "passkey_prompt",
    "passkey_trials",
    "pose_batch_position_ids",
    "pose_position_ids",
    "tokenize_documents",
]
