"""Simple descriptive statistics for English prose.

This module computes word frequencies, sentence counts and a readability score for plain text. It is
deliberately dependency-free so that it can run anywhere a Python interpreter is available, and it trades
linguistic accuracy for transparency: every rule is a few lines of code that can be read and changed.

Example::

    >>> stats = analyse("The cat sat. The cat ran away!")
    >>> stats.sentences, stats.words
    (2, 7)
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s+[A-Z]|\s*$)")
ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "prof", "e.g", "i.e", "etc", "vs", "fig", "approx"})
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have in is it its of on or that the this to was were with".split()
)


@dataclass(frozen=True)
class TextStats:
    """Summary statistics of one text.

    Attributes:
        words: number of word tokens.
        sentences: number of sentences (at least 1 for non-empty text).
        syllables: estimated total number of syllables.
        top_words: the most frequent non-stopwords with their counts.
    """

    words: int
    sentences: int
    syllables: int
    top_words: list[tuple[str, int]] = field(default_factory=list)

    @property
    def words_per_sentence(self) -> float:
        """Average sentence length in words."""
        return self.words / self.sentences if self.sentences else 0.0

    @property
    def flesch_reading_ease(self) -> float:
        """Flesch reading-ease score: higher is easier; 60-70 is plain English."""
        if not self.words or not self.sentences:
            return 0.0
        return 206.835 - 1.015 * self.words_per_sentence - 84.6 * (self.syllables / self.words)


def words(text: str) -> list[str]:
    """Return the word tokens of ``text`` in lower case, keeping internal apostrophes (``don't``)."""
    return [w.lower() for w in WORD_RE.findall(text)]


def count_sentences(text: str) -> int:
    """Count sentences, ignoring full stops after common abbreviations such as "Dr." or "e.g.".

    The rule is simple: a run of ``.``, ``!`` or ``?`` ends a sentence when it is followed by whitespace
    and a capital letter, or by the end of the text, unless the word before it is a known abbreviation.
    """
    count = 0
    for match in SENTENCE_END_RE.finditer(text):
        before = text[: match.start()].rsplit(None, 1)
        last_word = before[-1].lower().rstrip(".") if before else ""
        if match.group() == "." and last_word in ABBREVIATIONS:
            continue
        count += 1
    return max(count, 1) if text.strip() else 0


def syllables(word: str) -> int:
    """Estimate the syllables in an English word by counting groups of vowels.

    A silent final "e" is discounted ("make" has one syllable) and every word has at least one.
    """
    word = word.lower()
    groups = re.findall(r"[aeiouy]+", word)
    n = len(groups)
    if word.endswith("e") and not word.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(n, 1)


class Vocabulary:
    """An incrementally built word-frequency table.

    Feed it texts with :meth:`add` and query the most common content words with :meth:`most_common`.
    Stopwords are counted separately so that they do not dominate the ranking.
    """

    def __init__(self, stopwords: frozenset[str] = STOPWORDS) -> None:
        self._stopwords = stopwords
        self.counts: Counter[str] = Counter()
        self.stopword_count = 0

    def add(self, text: str) -> None:
        """Add the words of ``text`` to the table."""
        for w in words(text):
            if w in self._stopwords:
                self.stopword_count += 1
            else:
                self.counts[w] += 1

    def most_common(self, n: int = 10) -> list[tuple[str, int]]:
        """The ``n`` most frequent content words, ties broken alphabetically."""
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def __len__(self) -> int:
        return len(self.counts)


def analyse(text: str, top: int = 10) -> TextStats:
    """Compute :class:`TextStats` for ``text``."""
    tokens = words(text)
    vocab = Vocabulary()
    vocab.add(text)
    return TextStats(
        words=len(tokens),
        sentences=count_sentences(text),
        syllables=sum(syllables(w) for w in tokens),
        top_words=vocab.most_common(top),
    )


def main(argv: list[str]) -> int:
    """Print statistics for each file named on the command line."""
    if not argv:
        print("usage: text_stats.py FILE [FILE ...]", file=sys.stderr)
        return 2
    for name in argv:
        stats = analyse(Path(name).read_text(encoding="utf-8"))
        print(f"{name}: {stats.words} words, {stats.sentences} sentences, "
              f"reading ease {stats.flesch_reading_ease:.1f}")
        for word, n in stats.top_words[:5]:
            print(f"    {word:<15} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
