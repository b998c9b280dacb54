"""Question-answering files for RULER's qa_1 (SQuAD) and qa_2 (HotpotQA): questions, their answers, and the
documents they are answered from.

RULER builds each QA prompt from a question's gold document(s) among distractor documents of the same file. The
two formats are the datasets' own dev-set JSON files:

- SQuAD (v1.1 or v2.0): `{"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"question": ...,
  "answers": [{"text": ...}, ...], "is_impossible": false}]}]}]}`; each paragraph is one document, and unanswerable
  questions (v2.0) are left out;
- HotpotQA: `[{"question": ..., "answer": ..., "context": [[title, [sentence, ...]], ...],
  "supporting_facts": [[title, sentence index], ...]}]`; each context entry is one document "title\\ntext", the
  gold ones are those the supporting facts name, and the question's other context entries are its first
  distractors (HotpotQA's own hard negatives), as RULER does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SQUAD = "squad"
HOTPOTQA = "hotpotqa"
FORMATS = (SQUAD, HOTPOTQA)


@dataclass(frozen=True)
class Question:
    text: str
    answers: tuple[str, ...]  # any of them counts (RULER's string_match_part)
    gold: tuple[int, ...]     # indices of its documents in QASet.documents
    related: tuple[int, ...] = ()  # its own distractors, placed before random ones (HotpotQA)


@dataclass(frozen=True)
class QASet:
    dataset: str                   # squad | hotpotqa
    source: str                    # the file it was read from
    documents: tuple[str, ...]
    questions: tuple[Question, ...]


def read_qa(path: str | Path) -> QASet:
    """Read a SQuAD or HotpotQA JSON file (the format is recognised from its structure)."""
    name = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"`qa_files` {name!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"`qa_files` {name!r} is a directory; give a SQuAD or HotpotQA JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"`qa_files` {name!r} is not JSON ({exc}); give a SQuAD or HotpotQA JSON file") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        qa = _squad(data["data"], name)
    elif isinstance(data, list) and data and all(isinstance(d, dict) and "context" in d for d in data):
        qa = _hotpotqa(data, name)
    else:
        raise ValueError(f"`qa_files` {name!r} is neither SQuAD JSON ({{\"data\": [...]}}) nor HotpotQA JSON "
                         "(a list of questions with context)")
    if not qa.questions:
        raise ValueError(f"`qa_files` {name!r} holds no answerable question")
    return qa


def _squad(articles: list, name: str) -> QASet:
    documents: dict[str, int] = {}
    questions = []
    try:
        for article in articles:
            for paragraph in article["paragraphs"]:
                index = documents.setdefault(" ".join(paragraph["context"].split()), len(documents))
                for qa in paragraph["qas"]:
                    answers = tuple(dict.fromkeys(a["text"].strip() for a in qa.get("answers", ()) if a["text"].strip()))
                    if answers and not qa.get("is_impossible", False):
                        questions.append(Question(" ".join(qa["question"].split()), answers, (index,)))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"`qa_files` {name!r} is not SQuAD JSON: an entry lacks {exc}") from None
    return QASet(SQUAD, name, tuple(documents), tuple(questions))


def _hotpotqa(items: list, name: str) -> QASet:
    documents: dict[str, int] = {}
    questions = []
    try:
        for item in items:
            supporting = {title for title, _ in item.get("supporting_facts", ())}
            indices = {title: documents.setdefault(f"{title}\n{''.join(sentences).strip()}", len(documents))
                       for title, sentences in item["context"]}
            gold = tuple(i for title, i in indices.items() if title in supporting) or tuple(indices.values())
            related = tuple(i for i in indices.values() if i not in gold)
            answer = str(item["answer"]).strip()
            if answer:
                questions.append(Question(" ".join(item["question"].split()), (answer,), gold, related))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"`qa_files` {name!r} is not HotpotQA JSON: an entry lacks {exc}") from None
    return QASet(HOTPOTQA, name, tuple(documents), tuple(questions))
