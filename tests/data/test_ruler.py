"""RULER's synthetic tasks: formats pinned to RULER's templates, exact token lengths, scoring, and the split of keys
and fillers between training and evaluation."""

import random
import re

import pytest

from ropescale.data import fillers, qa, ruler, synthetic
from tests.qa_files import write_hotpotqa, write_squad

HAY = ruler.Haystacks(essay=fillers.essay_sentences())
FIT_AT_512 = [n for n in ruler.SYNTHETIC_TASKS if n not in ("cwe", "fwe")]


def text_of(tok, sample):
    return tok.decode(sample.prompt_ids, skip_special_tokens=True)


@pytest.mark.parametrize("name", FIT_AT_512)
@pytest.mark.parametrize("length", [512, 777])
def test_needle_and_tracing_samples_fill_the_length_exactly(embedded_tokenizer, other_tokenizer, name, length):
    for tok in (embedded_tokenizer, other_tokenizer):
        for index in range(3):
            s = ruler.ruler_sample(tok, name, length, index, 3, hay=HAY)
            assert len(s.prompt_ids) + len(s.answer_ids) == length


@pytest.mark.parametrize("name", ["cwe", "fwe"])
def test_list_tasks_fill_the_length_to_within_one_item(embedded_tokenizer, name):
    s = ruler.ruler_sample(embedded_tokenizer, name, 2048, 0, 1, hay=HAY)
    assert 2048 - 12 <= len(s.prompt_ids) + len(s.answer_ids) <= 2048


def test_niah_single_1_is_rulers_template_with_the_noise_haystack(embedded_tokenizer):
    s = ruler.ruler_sample(embedded_tokenizer, "niah_single_1", 1024, 1, 3, hay=HAY)
    text = text_of(embedded_tokenizer, s)
    assert text.startswith("A special magic number is hidden within the following text. Make sure to memorize it. "
                           "I will quiz you about the number afterwards.\nThe grass is green.")
    (value,) = s.outputs
    assert re.fullmatch(r"[1-9]\d{6}", value)  # a 7-digit number
    key = re.search(r"One of the special magic numbers for ([a-z]+-[a-z]+) is: " + value + r"\.", text).group(1)
    assert text.endswith(f"\nWhat is the special magic number for {key} mentioned in the provided text? "
                         f"The special magic number for {key} mentioned in the provided text is")
    assert text.count("special magic numbers for") == 1  # one needle
    assert embedded_tokenizer.decode(s.answer_ids) == f" {value}."
    assert 0.4 < s.depth < 0.6  # sample 1 of 3: the middle


def test_niah_multikey_1_hides_four_keys_and_asks_one(embedded_tokenizer):
    s = ruler.ruler_sample(embedded_tokenizer, "niah_multikey_1", 1024, 0, 2, hay=HAY)
    text = text_of(embedded_tokenizer, s)
    assert text.count("One of the special magic numbers for") == 4
    assert len(s.outputs) == 1 and s.depth == 0.0


def test_multikey_2_haystack_is_made_of_distractor_needles(embedded_tokenizer):
    s = ruler.ruler_sample(embedded_tokenizer, "niah_multikey_2", 1024, 0, 1, hay=HAY)
    lines = text_of(embedded_tokenizer, s).split("\n")[1:-1]
    needles = [ln for ln in lines if re.fullmatch(r"One of the special magic numbers for [a-z]+-[a-z]+ is: \d{7}\.", ln)]
    assert len(needles) >= len(lines) - 1 > 10  # every line a needle (the last cut to fit)


def test_multikey_3_keys_and_values_are_uuids(embedded_tokenizer):
    s = ruler.ruler_sample(embedded_tokenizer, "niah_multikey_3", 1024, 0, 1, hay=HAY)
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch(uuid, s.outputs[0])
    assert re.search(f"special magic uuids for {uuid} is: {s.outputs[0]}", text_of(embedded_tokenizer, s))


def test_multivalue_and_multiquery_answer_four_values(embedded_tokenizer):
    mv = ruler.ruler_sample(embedded_tokenizer, "niah_multivalue", 1024, 0, 1, hay=HAY)
    text = text_of(embedded_tokenizer, mv)
    assert len(mv.outputs) == 4 and "What are all the special magic numbers for" in text
    key = re.search(r"numbers for (\S+) mentioned", text).group(1)
    assert all(f"numbers for {key} is: {v}." in text for v in mv.outputs)
    mq = ruler.ruler_sample(embedded_tokenizer, "niah_multiquery", 1024, 0, 1, hay=HAY)
    query = re.search(r"numbers for (.+) mentioned in the provided text\?", text_of(embedded_tokenizer, mq)).group(1)
    assert len(mq.outputs) == 4 and query.count(", ") == 3 and ", and " in query  # RULER: "a, b, c, and d"


def test_vt_hides_one_chain_of_four_hops_in_order(embedded_tokenizer):
    s = ruler.ruler_sample(embedded_tokenizer, "vt", 1024, 0, 2, hay=HAY)
    text = text_of(embedded_tokenizer, s)
    chain = re.findall(r"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d{5})", text)
    assert [name for name, _ in chain] == s.outputs and len(chain) == 5
    value = chain[0][1]
    assert all(rhs == f"VAR {chain[i][0]}" for i, (_, rhs) in enumerate(chain[1:]))
    assert text.startswith("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n")
    assert text.endswith(f"Question: Find all variables that are assigned the value {value} in the text above. Answer: "
                         f"According to the chain(s) of variable assignment in the text above, 5 variables are "
                         f"assigned the value {value}, they are:")


def test_cwe_repeats_ten_words_more_than_the_rest(embedded_tokenizer):
    s = ruler.ruler_sample(embedded_tokenizer, "cwe", 2048, 0, 1, hay=HAY)
    query = text_of(embedded_tokenizer, s).split("Below is a numbered list of words.")[2]
    words = re.findall(r"\d+\. ([a-z]+)", query.split("\nQuestion:")[0])
    counts = {w: words.count(w) for w in set(words)}
    assert len(s.outputs) == 10 and all(counts[w] == 6 for w in s.outputs)  # below 4K: 6 times, others once
    assert all(c == 1 for w, c in counts.items() if w not in s.outputs)


def test_fwe_answers_the_three_most_frequent_coded_words(embedded_tokenizer):
    s = ruler.ruler_sample(embedded_tokenizer, "fwe", 2048, 0, 1, hay=HAY)
    context = text_of(embedded_tokenizer, s).split("coded words. ")[1].split("\nQuestion:")[0].split()
    ranked = sorted(set(context), key=context.count, reverse=True)
    assert ranked[0] == "..." and ranked[1:4] == s.outputs
    assert context.count(s.outputs[0]) > context.count(s.outputs[1]) > context.count(s.outputs[2])


def test_a_length_too_short_for_a_task_is_refused_with_its_name(embedded_tokenizer):
    with pytest.raises(ValueError, match=r"niah_multiquery at length 128: needs at least \d+ tokens"):
        ruler.ruler_sample(embedded_tokenizer, "niah_multiquery", 128, 0, 1, hay=HAY)


def test_samples_depend_on_seed_task_length_and_index_only(embedded_tokenizer):
    a = ruler.ruler_sample(embedded_tokenizer, "niah_single_2", 600, 3, 5, hay=HAY)
    assert a == ruler.ruler_sample(embedded_tokenizer, "niah_single_2", 600, 3, 5, hay=HAY)
    assert a != ruler.ruler_sample(embedded_tokenizer, "niah_single_2", 600, 3, 5, seed=1, hay=HAY)


def test_chat_template_wraps_the_task_and_the_answer_prefix_follows(embedded_tokenizer):
    tok = embedded_tokenizer
    template = "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"
    wrapped = type(tok).from_pretrained(tok.name_or_path)
    wrapped.chat_template = template
    s = ruler.ruler_sample(wrapped, "niah_single_1", 600, 0, 1, hay=HAY, chat_template=True)
    text = wrapped.decode(s.prompt_ids)
    assert text.startswith("<|user|>A special magic number") and len(s.prompt_ids) + len(s.answer_ids) == 600
    assert "provided text?<|end|><|assistant|>The special magic number for" in text


def test_string_match_scores_as_ruler():
    assert ruler.string_match_all(" The numbers are 123 and 456.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert ruler.string_match_all("ABCDE abcde", ["abcde"]) == 1.0  # case-insensitive
    assert ruler.string_match_part("Paris, France", ["paris", "london"]) == 1.0
    assert ruler.string_match_part("Rome", ["paris", "london"]) == 0.0
    assert ruler.score("qa_1", "Paris", ["paris", "x"]) == 1.0
    assert ruler.score("niah_multivalue", "1 2", ["1", "2", "3", "4"]) == 0.5


def test_evaluation_keys_and_training_keys_never_meet(embedded_tokenizer):
    rng = random.Random(0)
    train_docs = [synthetic.training_document(embedded_tokenizer, rng, 256, rng.random()) for _ in range(60)]
    keys = set()
    for doc in train_docs:
        text = embedded_tokenizer.decode(doc.ids)
        keys |= set(re.findall(r"\b\d{5}\b|\b\d{7}\b|[0-9a-f]{8}-[0-9a-f-]{27}|[a-z]+-[a-z]+(?= is:)", text))
    assert keys and all(fillers.key_split(k) == "train" for k in keys)
    for index in range(10):
        s = ruler.ruler_sample(embedded_tokenizer, "niah_multikey_2", 512, index, 10, hay=HAY)
        found = re.findall(r"for (\S+) is: (\d{7})", text_of(embedded_tokenizer, s))
        assert found and all(fillers.key_split(k) == fillers.key_split(v) == "eval" for k, v in found)


def test_training_documents_never_hold_an_evaluation_filler(embedded_tokenizer):
    rng = random.Random(1)
    landmark = set(fillers.sentences(fillers.LANDMARK))
    essays = set(fillers.essay_sentences())
    for _ in range(60):
        doc = synthetic.training_document(embedded_tokenizer, rng, 256, rng.random())
        text = embedded_tokenizer.decode(doc.ids, skip_special_tokens=True)
        assert not any(s in text for s in landmark | essays if len(s) > 20)
        assert "The grass is green. The sky is blue." not in text
        assert len(doc.ids) == 256 and 0 < sum(doc.is_answer) < 40


def test_filler_families_split_training_from_evaluation():
    assert not set(fillers.TRAIN_FAMILIES) & set(fillers.EVAL_FAMILIES)
    assert set(fillers.UNSEEN_FAMILIES) <= set(fillers.EVAL_FAMILIES)
    rng = random.Random(0)
    for family in fillers.FAMILIES:
        assert "".join(fillers.draw_filler(family, rng)).strip()
    with pytest.raises(ValueError, match="filler family must be one of"):
        fillers.draw_filler("poems", rng)


def test_task_rows_are_whole_documents_of_the_mixture_with_fillers_from_the_given_texts(embedded_tokenizer):
    texts = ["Lorem ipsum dolor sit amet. Consectetur adipiscing elit sed do. Eiusmod tempor incididunt ut labore."]
    rows, answers = synthetic.task_rows(embedded_tokenizer, 4, 1024, texts, seed=3, min_len=128)
    assert rows.shape == answers.shape == (4, 1024)
    again = synthetic.task_rows(embedded_tokenizer, 4, 1024, texts, seed=3, min_len=128)
    assert (rows == again[0]).all() and (answers == again[1]).all()
    eos = embedded_tokenizer.eos_token_id
    for row, mask in zip(rows.tolist(), answers.tolist()):
        assert row[-1] == eos  # the last document ends the row: documents are never split
        text = embedded_tokenizer.decode(row, skip_special_tokens=True)
        assert "Shakespeare" not in text and "Enter" not in text  # fillers from the given texts only
        answer = embedded_tokenizer.decode([t for t, m in zip(row, mask) if m])
        assert answer.endswith("</s>") and row.count(eos) == answer.count("</s>")  # each answer ends with its EOS
        answer = answer.replace("</s>", "")
        assert answer.strip() and all(ch.isalnum() or ch in " ,.-" for ch in answer)


# ---- QA (qa_1: SQuAD, qa_2: HotpotQA) ----

def test_squad_and_hotpotqa_files_are_read_as_documents_and_questions(tmp_path):
    squad = qa.read_qa(write_squad(tmp_path / "s.json"))
    assert squad.dataset == "squad" and len(squad.documents) == 60 and len(squad.questions) == 60
    assert squad.questions[3].answers == ("River3",) and squad.questions[3].gold == (3,)
    hotpot = qa.read_qa(write_hotpotqa(tmp_path / "h.json"))
    assert hotpot.dataset == "hotpotqa" and len(hotpot.documents) == 90
    first = hotpot.questions[0]
    assert [hotpot.documents[i].split("\n")[0] for i in first.gold] == ["Label0", "Person0"]
    assert hotpot.documents[first.gold[0]] == "Label0\nLabel0 was founded by Person0. It is a label."
    assert [hotpot.documents[i].split("\n")[0] for i in first.related] == ["Other0"]


@pytest.mark.parametrize("text,message", [
    ("{", "is not JSON"), ('{"x": 1}', "is neither SQuAD JSON"), ('{"data": [{"title": 1}]}', "is not SQuAD JSON"),
    ('[{"context": [], "question": "q"}]', "is not HotpotQA JSON"), ('{"data": []}', "holds no answerable question")])
def test_bad_qa_files_are_named(tmp_path, text, message):
    (tmp_path / "q.json").write_text(text)
    with pytest.raises(ValueError, match=f"^`qa_files` '{tmp_path / 'q.json'}' {message}"):
        qa.read_qa(tmp_path / "q.json")


@pytest.mark.parametrize("name,writer", [("qa_1", write_squad), ("qa_2", write_hotpotqa)])
def test_qa_samples_put_the_gold_documents_among_distractors_within_the_length(embedded_tokenizer, tmp_path, name,
                                                                               writer):
    qa_set = qa.read_qa(writer(tmp_path / "f.json"))
    hay = ruler.Haystacks(qa=(qa_set,))
    s = ruler.ruler_sample(embedded_tokenizer, name, 1024, 1, 3, hay=hay)
    text = text_of(embedded_tokenizer, s)
    assert text.startswith("Answer the question based on the given documents. Only give me the answer and do not "
                           "output any other words.\n\nThe following are given documents.\n\nDocument 1:\n")
    question = re.search(r"Question: (.*) Answer:$", text).group(1)
    answer = s.outputs[0]
    asked = next(q for q in qa_set.questions if q.text == question)
    assert asked.answers == tuple(s.outputs) and answer[-1] in question
    assert all(qa_set.documents[g] in text for g in asked.gold)   # every gold document is there
    n_docs = len(re.findall(r"Document \d+:", text))
    assert n_docs >= 4 and 0.0 <= s.depth <= 1.0
    assert 1024 - 80 < len(s.prompt_ids) + len(s.answer_ids) <= 1024   # short by less than one document
    assert ruler.score(name, " " + answer.lower(), s.outputs) == 1.0 and ruler.score(name, "no", s.outputs) == 0.0
    again = ruler.ruler_sample(embedded_tokenizer, name, 2048, 1, 3, hay=hay)
    assert again.outputs == s.outputs   # the same question at every length, as RULER


def test_a_qa_file_too_small_for_the_length_is_refused_with_what_it_fills(embedded_tokenizer, tmp_path):
    hay = ruler.Haystacks(qa=(qa.read_qa(write_squad(tmp_path / "s.json", n_paragraphs=3)),))
    with pytest.raises(ValueError, match=r"^qa_1 at length 4096: the 3 documents of .* fill only \d+ of 4096 tokens; "
                                         "give a larger QA file$"):
        ruler.ruler_sample(embedded_tokenizer, "qa_1", 4096, 0, 1, hay=hay)
    with pytest.raises(ValueError, match="qa_2 at length 512: needs a hotpotqa file"):
        ruler.ruler_sample(embedded_tokenizer, "qa_2", 512, 0, 1, hay=hay)
