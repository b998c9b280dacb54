"""Tiny SQuAD and HotpotQA files for the RULER QA tests (written by the tests, in each dataset's own format)."""

import json


def write_squad(path, n_paragraphs=60):
    """A SQuAD v2-style file: one question per paragraph (the answer a word of it), plus an unanswerable one."""
    paragraphs = []
    for i in range(n_paragraphs):
        context = f"Paragraph {i} tells of the town of Town{i}, whose river is called River{i}. " * 3
        paragraphs.append({"context": context, "qas": [
            {"question": f"What is the river of Town{i} called?", "answers": [{"text": f"River{i}"}] * 2},
            {"question": "Unanswerable?", "answers": [], "is_impossible": True}]})
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "towns", "paragraphs": paragraphs}]}))
    return str(path)


def write_hotpotqa(path, n_questions=30):
    items = []
    for i in range(n_questions):
        items.append({"question": f"Which band did the founder of Label{i} join?", "answer": f"Band{i}",
                      "context": [[f"Label{i}", [f"Label{i} was founded by Person{i}.", " It is a label."]],
                                  [f"Person{i}", [f"Person{i} joined Band{i}."]],
                                  [f"Other{i}", ["Something unrelated happened."]]],
                      "supporting_facts": [[f"Label{i}", 0], [f"Person{i}", 0]]})
    path.write_text(json.dumps(items))
    return str(path)
