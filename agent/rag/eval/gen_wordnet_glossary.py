#!/usr/bin/env python3
"""Identifier-free medical text the de-identifier was not written against: a glossary of
WordNet 3.0 noun senses about diseases and conditions (lexicographer file noun.state), the body
(noun.body) and drugs (noun.substance senses whose gloss speaks of a drug, medicine or trade
name), each written "Headword: gloss." as a glossary or a guideline would, ten to a record.

    apt-get install wordnet-base
    python3 agent/rag/eval/gen_wordnet_glossary.py     # writes agent/rag/eval/medical_wordnet.jsonl

WordNet 3.0 Copyright 2006 by Princeton University; used under the WordNet licence (see
agent/rag/data/README.md). Deterministic: no randomness, the order is WordNet's.
"""

import json
import os
import re
import sys

DATA = "/usr/share/wordnet/data.noun"
DRUG = re.compile(r"\b(drug|medicine|medication|trade name|antibiotic|analgesic|vaccine|used to treat)\b")


def senses():
    with open(DATA, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            lex = fields[1]
            word = fields[4].replace("_", " ")
            # Strip WordNet's sense markers ("(p)", "(a)") and trailing blanks.
            word = re.sub(r"\(\w+\)$", "", word)
            gloss = gloss.strip()
            if lex in ("26", "08") or lex == "27" and DRUG.search(gloss):
                yield word, gloss


def main():
    if not os.path.exists(DATA):
        print(f"{DATA} is missing: apt-get install wordnet-base", file=sys.stderr)
        return 1
    entries = [f"{w[0].upper()}{w[1:]}: {g}." for w, g in senses()]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "medical_wordnet.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for i in range(0, len(entries), 10):
            f.write(json.dumps({"id": f"wordnet-{i // 10:04d}", "text": "\n".join(entries[i:i + 10])}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
