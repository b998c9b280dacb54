"""RULER's synthetic tasks (Hsieh et al. 2024, "RULER: What's the Real Context Size of Your Long-Context Language
Models?", NVIDIA/RULER `scripts/data/synthetic/`), generated in the model's own tokens.

Templates, needle sentence, haystacks, key and value kinds, task parameters and scoring follow RULER:
- niah_*: "One of the special magic {numbers|words|uuids} for {key} is: {value}." hidden in a haystack of noise
  (Landmark's sentences), essay prose, or distractor needles; keys are adjective-noun pairs, 7-digit numbers or
  UUIDs (wonderwords' lists, as RULER); the model must return every value asked for;
- vt: a chain "VAR ABCDE = 12345", "VAR FGHIJ = VAR ABCDE", ... (4 hops) in the noise; return every variable that
  holds the value;
- cwe: a numbered word list where 10 words repeat more often than the rest, one worked example first;
- fwe: made-up 6-letter words drawn from a Zipf distribution (alpha 2), "..." the most frequent; return the 3 most
  frequent words;
- qa_1 / qa_2: a question over its gold paragraph(s) among distractor documents of a SQuAD / HotpotQA file
  (`ropescale.data.qa`), "Document i:" each, as many as fit.
Scoring: string_match_all (the fraction of expected strings in the output, case-insensitive) for the synthetic
tasks, string_match_part (1 if any expected string is in it) for QA.

Sizes: a sample's prompt plus its reference answer fill exactly `length` tokens (RULER leaves room for its
whole generation budget instead, 30-128 tokens, a difference under 3 % at 4K and beyond); the haystack is cut in
tokens, so every tokenizer gets the exact length. Needles sit between haystack sentences at their depth (sample i
of n at depth i/(n-1) for the asked needle, the others at random depths). The prompt ends with RULER's answer
prefix ("... The special magic number for KEY mentioned in the provided text is"), after the chat template when
one is used.

Keys come from one half of all keys (`fillers.key_split`): "eval" for evaluation, "train" for the synthetic
documents of pretraining, so no evaluated key was seen in training.
"""

from __future__ import annotations

import math
import random
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from ropescale.data.fillers import LANDMARK, cycle_sentences, draw_key, word_list
from ropescale.data.passkey import continuation, encode, special_prefix
from ropescale.data.qa import QASet

NEEDLE = "One of the special magic {type} for {key} is: {value}."
NIAH_TEMPLATE = (
    "Some special magic {type} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type} afterwards.\n{context}\n"
    "What are all the special magic {type} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = " The special magic {type} for {query} mentioned in the provided text are"
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assigned the value {query}, they are:"
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
    "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"
)
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
    "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}"
)
QA_ANSWER_PREFIX = " Answer:"


@dataclass(frozen=True)
class SyntheticTask:
    """One of RULER's 13 tasks (`scripts/synthetic.yaml`): its kind and parameters."""

    name: str
    kind: str  # niah | vt | cwe | fwe | qa
    max_new_tokens: int  # RULER's tokens_to_generate
    haystack: str = "noise"  # niah, vt: noise | essay | needle
    key_type: str = "words"  # niah: words | numbers | uuids
    value_type: str = "numbers"
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1
    dataset: str = ""  # qa: squad | hotpotqa

    @property
    def metric(self) -> str:
        return "string_match_part" if self.kind == "qa" else "string_match_all"


TASKS = {t.name: t for t in (
    SyntheticTask("niah_single_1", "niah", 128, haystack="noise"),
    SyntheticTask("niah_single_2", "niah", 128, haystack="essay"),
    SyntheticTask("niah_single_3", "niah", 128, haystack="essay", value_type="uuids"),
    SyntheticTask("niah_multikey_1", "niah", 128, haystack="essay", num_keys=4),
    SyntheticTask("niah_multikey_2", "niah", 128, haystack="needle"),
    SyntheticTask("niah_multikey_3", "niah", 128, haystack="needle", key_type="uuids", value_type="uuids"),
    SyntheticTask("niah_multivalue", "niah", 128, haystack="essay", num_values=4),
    SyntheticTask("niah_multiquery", "niah", 128, haystack="essay", num_keys=4, num_queries=4),
    SyntheticTask("vt", "vt", 30),
    SyntheticTask("cwe", "cwe", 120),
    SyntheticTask("fwe", "fwe", 50),
    SyntheticTask("qa_1", "qa", 32, dataset="squad"),
    SyntheticTask("qa_2", "qa", 32, dataset="hotpotqa"),
)}
SYNTHETIC_TASKS = tuple(name for name, t in TASKS.items() if t.kind != "qa")


class RulerSample(NamedTuple):
    """One prompt of a task. `prompt_ids` + `answer_ids` fill the sample's length exactly (QA, cwe and fwe: at
    most, short by less than one list item or document); greedy output is scored against `outputs`."""

    prompt_ids: list[int]
    answer_ids: list[int]  # the reference continuation (outputs joined), for teacher-forced cost and training
    outputs: list[str]  # every string the output must contain
    depth: float  # where the asked needle or the chain's first statement sits in the context (0..1); -1: none


@dataclass
class Haystacks:
    """The text RULER's haystacks are made of: noise (repeated), essay (prose), and the key split to draw from."""

    noise: tuple[str, ...] = (LANDMARK,)
    essay: tuple[str, ...] = ()
    keys: str | None = "eval"  # "eval" | "train" | None (any key)
    qa: tuple[QASet, ...] = ()  # qa_1 / qa_2: the SQuAD / HotpotQA files given (`ropescale.data.qa.read_qa`)


class Frame(NamedTuple):
    """What the model sees around the context: head ends where the context starts, tail is the question and the
    answer prefix (text; the tokenizer's BOS goes in front when no chat template supplies it)."""

    head: str
    tail: str


def chat_frame(tokenizer, prompt: str, answer_prefix: str, chat_template: bool) -> Frame:
    """Split `prompt` at "{context}" and wrap it in the tokenizer's chat template (user turn, generation prompt)
    when `chat_template`; the answer prefix follows the assistant header, as RULER does."""
    head, tail = prompt.split("{context}")
    if chat_template:
        marker = "\x00CONTEXT\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": head + marker + tail}],
                                             tokenize=False, add_generation_prompt=True)
        head, tail = text.split(marker)
        return Frame(head, tail + answer_prefix.lstrip())
    return Frame(head, tail + answer_prefix)


def layout(tokenizer, frame: Frame, needles: list[str], units: Iterator[str], depths: list[float],
           n_prompt: int, sep: str, prefix_ids: list[int]) -> tuple[list[int], float]:
    """prefix + head + context + tail of exactly `n_prompt` tokens, and the realised depth of needle 0.

    The context is haystack units and needles, each encoded with `sep` before it except the first (the head ends
    with the template's newline); needle i goes before unit round(depths[i] * n_units). The last haystack units
    are cut in tokens to fit exactly.
    """
    head, tail = prefix_ids + encode(tokenizer, frame.head), encode(tokenizer, frame.tail)
    n_hay = n_prompt - len(head) - len(tail) - sum(len(encode(tokenizer, sep + n)) for n in needles)
    if n_hay < 0:
        raise ValueError(f"needs at least {n_prompt - n_hay} tokens with this tokenizer")
    hay: list[str] = []
    n_tokens = 0
    while n_tokens < n_hay + 4:  # a few spare tokens: the first element, without `sep`, may be shorter
        hay.append(next(units))
        n_tokens += len(encode(tokenizer, sep + hay[-1]))
    n_units = max(1, len(hay) - 1)
    slots = [min(n_units, round(d * n_units)) for d in depths]
    order: list[tuple[int, str]] = []  # (needle index or -1 for haystack, text)
    for i, unit in enumerate(hay):
        order += [(j, needles[j]) for j in range(len(needles)) if slots[j] == i]
        order.append((-1, unit))
    order += [(j, needles[j]) for j in range(len(needles)) if slots[j] >= len(hay)]
    pieces = [(j, encode(tokenizer, text if k == 0 else sep + text)) for k, (j, text) in enumerate(order)]
    excess = len(head) + sum(len(ids) for _, ids in pieces) + len(tail) - n_prompt
    for k in range(len(pieces) - 1, -1, -1):  # cut the excess from the last haystack units
        j, ids = pieces[k]
        if excess > 0 and j < 0:
            cut = min(excess, len(ids))
            pieces[k] = (j, ids[: len(ids) - cut])
            excess -= cut
    if excess != 0:
        raise ValueError(f"needs at least {n_prompt + max(excess, 0)} tokens with this tokenizer")
    context = [t for _, ids in pieces for t in ids]
    depth = -1.0
    if needles:  # haystack tokens before needle 0 / all haystack tokens
        k0 = next(k for k, (j, _) in enumerate(pieces) if j == 0)
        before = sum(len(ids) for j, ids in pieces[:k0] if j < 0)
        depth = before / max(1, sum(len(ids) for j, ids in pieces if j < 0))
    return head + context + tail, depth


# ---- keys and values ----

def _word_key(rng: random.Random) -> str:
    return f"{rng.choice(word_list('adjective'))}-{rng.choice(word_list('noun'))}"


def _number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_MAKERS = {"words": _word_key, "numbers": _number, "uuids": _uuid}


def _distinct(rng: random.Random, kind: str, n: int, split: str | None, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        key = draw_key(rng, _MAKERS[kind], split)
        if key not in taken:
            taken.add(key)
            out.append(key)
    return out


def _joined(items: list[str]) -> str:
    return ", ".join(items[:-1]) + ", and " + items[-1] if len(items) > 1 else items[0]


# ---- the tasks ----

def niah_sample(tokenizer, task: SyntheticTask, n_prompt_and_answer: int, depth: float, rng: random.Random,
                hay: Haystacks, chat_template: bool = False) -> RulerSample:
    """A needle-in-a-haystack sample of `task` (RULER `niah.py`)."""
    taken: set[str] = set()
    keys = _distinct(rng, task.key_type, max(task.num_keys, task.num_queries), hay.keys, taken)
    values = [_distinct(rng, task.value_type, task.num_values, hay.keys, taken) for _ in keys]
    kind = task.value_type
    needles = [NEEDLE.format(type=kind, key=k, value=v) for k, vs in zip(keys, values) for v in vs]
    asked = list(range(task.num_queries))  # keys[0..q-1]; keys[0]'s first needle sits at `depth`
    single = task.num_queries * task.num_values == 1
    template, prefix, kind_word = NIAH_TEMPLATE, NIAH_ANSWER_PREFIX, kind
    if single:  # RULER's singular wording for one answer
        template = template.replace("Some", "A").replace("are all", "is").replace("are", "is")
        prefix = prefix.replace("are", "is")
        kind_word = kind[:-1]
    query = _joined([keys[i] for i in asked])
    outputs = [v for i in asked for v in values[i]]
    frame = chat_frame(tokenizer, template.format(type=kind_word, context="{context}", query=query),
                       prefix.format(type=kind_word, query=query), chat_template)
    answer_ids = continuation(tokenizer, frame.tail, " " + ", ".join(outputs) + ".")
    if task.haystack == "needle":
        units = _distractor_needles(rng, task, kind, hay.keys, taken)  # RULER: needles say "numbers" always
        sep = "\n"
    elif task.haystack == "essay":
        if not hay.essay:
            raise ValueError(f"{task.name} needs essay text for its haystack")
        units, sep = cycle_sentences(hay.essay), " "
    else:
        units, sep = cycle_sentences(hay.noise), "\n"
    depths = [depth] + [rng.random() for _ in needles[1:]]
    prompt, realised = layout(tokenizer, frame, needles, units, depths, n_prompt_and_answer - len(answer_ids),
                              sep, [] if chat_template else special_prefix(tokenizer))
    return RulerSample(prompt, answer_ids, outputs, realised)


def _distractor_needles(rng, task: SyntheticTask, kind: str, split, taken: set[str]) -> Iterator[str]:
    while True:
        key = _distinct(rng, task.key_type, 1, split, taken)[0]
        value = draw_key(rng, _MAKERS[task.value_type], split)
        yield NEEDLE.format(type=kind, key=key, value=value)


def vt_sample(tokenizer, task: SyntheticTask, n_prompt_and_answer: int, depth: float, rng: random.Random,
              hay: Haystacks, chat_template: bool = False, hops: int = 4) -> RulerSample:
    """Variable tracking (RULER `variable_tracking.py`): one chain of `hops` assignments in the noise."""
    names: list[str] = []
    while len(names) < hops + 1:
        name = "".join(rng.choices(string.ascii_uppercase, k=5))
        if name not in names:
            names.append(name)
    value = draw_key(rng, lambda r: str(r.randint(10000, 99999)), hay.keys)
    chain = [f"VAR {names[0]} = {value}"] + [f"VAR {names[i + 1]} = VAR {names[i]}" for i in range(hops)]
    frame = chat_frame(tokenizer, VT_TEMPLATE.replace("{query}", value),
                       VT_ANSWER_PREFIX.format(num_v=hops + 1, query=value), chat_template)
    answer_ids = continuation(tokenizer, frame.tail, " " + ", ".join(names))
    # the chain in order: its first statement at `depth`, the rest spread over what follows
    depths = [depth] + sorted(depth + (1 - depth) * rng.random() for _ in range(hops))
    prompt, realised = layout(tokenizer, frame, chain, cycle_sentences(hay.noise), depths,
                              n_prompt_and_answer - len(answer_ids), "\n",
                              [] if chat_template else special_prefix(tokenizer))
    return RulerSample(prompt, answer_ids, names, realised)


def _fit(build, n_tokens: int, lo: int, hi: int):
    """The largest n in [lo, hi] whose build(n) has at most n_tokens prompt + answer tokens (binary search, as
    RULER sizes its haystacks); raises when even `lo` does not fit."""
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        sample = build(mid)
        if len(sample.prompt_ids) + len(sample.answer_ids) <= n_tokens:
            best, lo = sample, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"needs more than {n_tokens} tokens with this tokenizer")
    return best


def cwe_sample(tokenizer, task: SyntheticTask, n_prompt_and_answer: int, rng: random.Random,
               chat_template: bool = False) -> RulerSample:
    """Common words extraction (RULER `common_words_extraction.py`): 10 words 30x (6x below 4K) among words 3x
    (1x below 4K), after one worked example of 40 (20) words."""
    long = n_prompt_and_answer >= 4096
    freq_cw, freq_ucw = (30, 3) if long else (6, 1)
    ex_cw, ex_ucw, ex_n = (10, 3, 40) if long else (3, 1, 20)
    pool = word_list("noun") + word_list("adjective") + word_list("verb")
    seed = rng.getrandbits(32)

    def build(n_words: int) -> RulerSample:
        r = random.Random(seed)
        ex_text, ex_common = _word_list_text(r, pool, ex_n, ex_cw, ex_ucw)
        text, common = _word_list_text(r, pool, n_words, freq_cw, freq_ucw)
        example = CWE_TEMPLATE.format(context=ex_text) + CWE_ANSWER_PREFIX + " " + _numbered(ex_common)
        frame = chat_frame(tokenizer, example + "\n" + CWE_TEMPLATE, CWE_ANSWER_PREFIX, chat_template)
        answer_ids = continuation(tokenizer, frame.tail, " " + _numbered(common))
        prefix = [] if chat_template else special_prefix(tokenizer)
        prompt = prefix + encode(tokenizer, frame.head + text + frame.tail)
        return RulerSample(prompt, answer_ids, common, -1.0)

    return _fit(build, n_prompt_and_answer, 11, max(11, n_prompt_and_answer // 2))


def _word_list_text(rng: random.Random, pool, n_words: int, common_repeats: int, uncommon_repeats: int):
    words = rng.sample(pool, n_words)
    common, uncommon = words[:10], words[10:]
    items = common * common_repeats + uncommon * uncommon_repeats
    rng.shuffle(items)
    return _numbered(items), common


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


ZETA_2 = math.pi**2 / 6  # Riemann zeta(2): normalises Zipf counts with alpha = 2


def fwe_sample(tokenizer, task: SyntheticTask, n_prompt_and_answer: int, rng: random.Random,
               chat_template: bool = False) -> RulerSample:
    """Frequent words extraction (RULER `freq_words_extraction.py`): coded 6-letter words with Zipf counts
    n * k^-2 / zeta(2) (RULER's alpha = 2), vocabulary length/50, the most frequent replaced by "..."; answer the
    next 3."""
    vocab_size = max(4, n_prompt_and_answer // 50)
    vocab: set[str] = set()
    while len(vocab) < vocab_size:
        vocab.add("".join(rng.choices(string.ascii_lowercase, k=6)))
    ranked = sorted(vocab)
    rng.shuffle(ranked)
    ranked[0] = "..."
    seed = rng.getrandbits(32)

    def build(n_words: int) -> RulerSample:
        counts = [int(n_words * k**-2 / ZETA_2) for k in range(1, len(ranked) + 1)]
        words = [w for w, c in zip(ranked, counts) for _ in range(c)]
        random.Random(seed).shuffle(words)
        frame = chat_frame(tokenizer, FWE_TEMPLATE, FWE_ANSWER_PREFIX, chat_template)
        answer_ids = continuation(tokenizer, frame.tail, " " + ", ".join(ranked[1:4]))
        prefix = [] if chat_template else special_prefix(tokenizer)
        prompt = prefix + encode(tokenizer, frame.head + " ".join(words) + frame.tail)
        return RulerSample(prompt, answer_ids, ranked[1:4], -1.0)

    # the 3rd answer must occur at least twice as often as a word of rank 5 (int() floors small counts to 0)
    return _fit(build, n_prompt_and_answer, 80, max(80, n_prompt_and_answer * 2))


DOCUMENT = "Document {i}:\n{document}"  # RULER's DOCUMENT_PROMPT


def qa_sample(tokenizer, task: SyntheticTask, n_prompt_and_answer: int, index: int, seed: int, rng: random.Random,
              hay: Haystacks, chat_template: bool = False) -> RulerSample:
    """Question answering (RULER `qa.py`): a question's gold document(s) among distractor documents of the same
    file, "Document i:" each, as many as fit; scored by string_match_part on the answers."""
    qa = next((q for q in hay.qa if q.dataset == task.dataset), None)
    if qa is None:
        raise ValueError(f"needs a {task.dataset} file (qa_file / --qa-file: "
                         f"{'SQuAD' if task.dataset == 'squad' else 'HotpotQA'} JSON)")
    order = list(range(len(qa.questions)))
    random.Random(f"qa:{seed}:{qa.dataset}").shuffle(order)  # the same question at every length, as RULER
    question = qa.questions[order[index % len(order)]]
    others = [i for i in range(len(qa.documents)) if i not in question.gold and i not in question.related]
    rng.shuffle(others)
    distractors = list(question.related) + others
    frame = chat_frame(tokenizer, QA_TEMPLATE.replace("{query}", question.text), QA_ANSWER_PREFIX, chat_template)
    answer_ids = continuation(tokenizer, frame.tail, " " + question.answers[0])
    prefix = [] if chat_template else special_prefix(tokenizer)
    placement = rng.getrandbits(32)

    def build(n_docs: int) -> RulerSample:
        docs = list(question.gold) + distractors[: n_docs - len(question.gold)]
        random.Random(placement).shuffle(docs)
        context = "\n\n".join(DOCUMENT.format(i=i + 1, document=qa.documents[d]) for i, d in enumerate(docs))
        first = min(docs.index(g) for g in question.gold)
        prompt = prefix + encode(tokenizer, frame.head + context + frame.tail)
        return RulerSample(prompt, answer_ids, list(question.answers), first / max(1, len(docs) - 1))

    total = len(question.gold) + len(distractors)
    everything = build(total)
    used = len(everything.prompt_ids) + len(everything.answer_ids)
    if used < n_prompt_and_answer:  # the file ran out of documents before the length was filled
        raise ValueError(f"the {len(qa.documents)} documents of {qa.source!r} fill only {used} of "
                         f"{n_prompt_and_answer} tokens; give a larger QA file")
    return everything if used == n_prompt_and_answer else _fit(build, n_prompt_and_answer, len(question.gold), total)


def ruler_sample(tokenizer, task: str | SyntheticTask, length: int, index: int, n_samples: int, seed: int = 0,
                 hay: Haystacks | None = None, chat_template: bool = False) -> RulerSample:
    """Sample `index` of `n_samples` of a synthetic task at `length` tokens (prompt + reference answer), drawn
    from (seed, task, length, index) alone; the asked needle at depth index/(n_samples-1).

    Raises ValueError naming the task and length when the length cannot hold the task with this tokenizer.
    """
    task = TASKS[task] if isinstance(task, str) else task
    hay = hay or Haystacks()
    rng = random.Random(f"ruler:{seed}:{task.name}:{length}:{index}")  # str seeds are stable across processes
    depth = index / (n_samples - 1) if n_samples > 1 else 0.5
    try:
        if task.kind == "niah":
            return niah_sample(tokenizer, task, length, depth, rng, hay, chat_template)
        if task.kind == "vt":
            return vt_sample(tokenizer, task, length, depth, rng, hay, chat_template)
        if task.kind == "cwe":
            return cwe_sample(tokenizer, task, length, rng, chat_template)
        if task.kind == "fwe":
            return fwe_sample(tokenizer, task, length, rng, chat_template)
        return qa_sample(tokenizer, task, length, index, seed, rng, hay, chat_template)
    except ValueError as exc:
        raise ValueError(f"{task.name} at length {length}: {exc}") from None


def string_match_all(output: str, expected: list[str]) -> float:
    """RULER: the fraction of expected strings that occur in the output, case-insensitive."""
    low = output.lower()
    return sum(e.lower() in low for e in expected) / len(expected)


def string_match_part(output: str, expected: list[str]) -> float:
    """RULER (QA): 1 when any expected string occurs in the output, case-insensitive."""
    low = output.lower()
    return float(any(e.lower() in low for e in expected))


def score(task: str | SyntheticTask, output: str, expected: list[str]) -> float:
    task = TASKS[task] if isinstance(task, str) else task
    return string_match_part(output, expected) if task.kind == "qa" else string_match_all(output, expected)
