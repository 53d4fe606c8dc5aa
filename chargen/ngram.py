"""A word trigram with stupid backoff: the counting baseline a network's next-word guesses must beat."""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field

BACKOFF = 0.4  # Brants et al. (2007): each step down to a shorter context scales the score by 0.4


@dataclass
class WordTrigram:
    unigrams: Counter = field(default_factory=Counter)
    bigrams: defaultdict = field(default_factory=lambda: defaultdict(Counter))
    trigrams: defaultdict = field(default_factory=lambda: defaultdict(Counter))
    ranked: dict = field(default_factory=dict, repr=False, compare=False)  # context -> (words commonest first, total)

    @classmethod
    def fit(cls, words: list[str]) -> WordTrigram:
        model = cls()
        model.unigrams.update(words)
        for a, b in zip(words, words[1:]):
            model.bigrams[a][b] += 1
        for a, b, c in zip(words, words[1:], words[2:]):
            model.trigrams[a, b][c] += 1
        return model

    def counts(self, context: tuple[str, ...]) -> Counter | None:
        """The words seen after the last two, one or no words of context."""
        if len(context) == 2:
            return self.trigrams.get(context)
        return self.bigrams.get(context[0]) if context else self.unigrams

    def ranking(self, context: tuple[str, ...]) -> tuple[list[tuple[str, int]], int]:
        """The words seen after context with their counts, commonest first (ties as first seen), and their total.

        Sorted once per context and kept: a call to top then costs the words it looks at, not a sort.
        """
        if context not in self.ranked:
            counts = self.counts(context) or Counter()
            self.ranked[context] = (counts.most_common(), sum(counts.values()))
        return self.ranked[context]

    def top(self, context: list[str], k: int = 5) -> list[str]:
        """The k best next words after the last two words of context, by stupid-backoff score."""
        scores: dict[str, float] = {}
        levels = []
        if len(context) >= 2:
            levels.append(((context[-2], context[-1]), 1.0))
        if context:
            levels.append(((context[-1],), BACKOFF ** len(levels)))
        levels.append(((), BACKOFF ** len(levels)))
        higher: list[Counter] = []
        for key, weight in levels:
            ranked, total = self.ranking(key)
            if not ranked:
                continue
            # a word seen after a longer context is scored there; if it missed that level's top k, it misses the k overall
            unseen = ((word, count) for word, count in ranked if not any(word in h for h in higher))
            for word, count in itertools.islice(unseen, k):
                scores.setdefault(word, weight * count / total)
            higher.append(self.counts(key))
        return sorted(scores, key=scores.get, reverse=True)[:k]
