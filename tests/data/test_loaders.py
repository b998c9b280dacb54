"""`load_texts`: every source kind, and one clear ValueError for each thing a user can get wrong."""

import importlib.util
import json

import pytest

from ropescale.data import Document, load_texts


def test_embedded_source_picks_the_split():
    assert [d.name for d in load_texts("embedded", split="eval")] == ["hamlet", "richard_iii"]
    assert len(load_texts("embedded")) == 40


def test_txt_file_is_one_document(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("To be, or not to be.\n", encoding="utf-8")
    assert load_texts(str(path)) == [Document("a.txt", "To be, or not to be.\n")]


def test_jsonl_takes_the_text_field_of_each_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two", "id": 2}) + "\n")
    docs = load_texts(str(path), text_field="body")
    assert [d.text for d in docs] == ["one", "two"]
    assert [d.name for d in docs] == ["d.jsonl:1", "d.jsonl:3"]


def test_folder_reads_txt_and_jsonl_sorted_and_skips_the_rest(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "sub" / "a.jsonl").write_text('{"text": "ay"}\n')
    (tmp_path / "a.txt").write_text("ay ay")
    (tmp_path / "notes.md").write_text("ignored")
    docs = load_texts(str(tmp_path))
    assert [d.name for d in docs] == ["a.txt", "b.txt", "sub/a.jsonl:1"]
    assert [d.text for d in docs] == ["ay ay", "bee", "ay"]


def test_missing_path(tmp_path):
    with pytest.raises(ValueError, match="path does not exist"):
        load_texts(str(tmp_path / "nope.txt"))


def test_jsonl_line_without_the_field_names_line_and_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"content": "no"}\n')
    with pytest.raises(ValueError, match=r"line 2 has no field 'text' \(fields: 'content'\)"):
        load_texts(str(path))


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        load_texts(str(path))


def test_non_utf8_file_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt' is not UTF-8"):
        load_texts(str(tmp_path))


@pytest.mark.parametrize("content", ["", "  \n\n"])
def test_empty_file_is_an_empty_corpus(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match="empty corpus"):
        load_texts(str(path))


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no .txt or .jsonl files"):
        load_texts(str(tmp_path))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        load_texts(str(path))


HAS_DATASETS = importlib.util.find_spec("datasets") is not None


@pytest.mark.skipif(not HAS_DATASETS, reason="datasets is an optional extra")
def test_hf_source_reads_a_local_data_files_folder(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "alpha"}\n{"text": "beta"}\n')
    docs = load_texts(f"hf:{tmp_path}", split="train")
    assert [d.text for d in docs] == ["alpha", "beta"]
    with pytest.raises(ValueError, match="no column 'body'"):
        load_texts(f"hf:{tmp_path}", text_field="body")


@pytest.mark.skipif(HAS_DATASETS, reason="checks the message shown when datasets is missing")
def test_hf_source_without_datasets_says_what_to_install():
    with pytest.raises(ValueError, match=r"pip install ropescale\[datasets\]"):
        load_texts("hf:pg19")
