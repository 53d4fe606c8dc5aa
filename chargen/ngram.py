"""A word trigram with stupid backoff: the counting baseline a network's next-word guesses must beat."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

BACKOFF = 0.4  # Brants et al. (2007): each step down to a shorter context scales the score by 0.4


@dataclass
class WordTrigram:
    unigrams: Counter = field(default_factory=Counter)
    bigrams: defaultdict = field(default_factory=lambda: defaultdict(Counter))
    trigrams: defaultdict = field(default_factory=lambda: defaultdict(Counter))

    @classmethod
    def fit(cls, words: list[str]) -> WordTrigram:
        model = cls()
        model.unigrams.update(words)
        for a, b in zip(words, words[1:]):
            model.bigrams[a][b] += 1
        for a, b, c in zip(words, words[1:], words[2:]):
            model.trigrams[a, b][c] += 1
        return model

    def top(self, context: list[str], k: int = 5) -> list[str]:
        """The k best next words after the last two words of context, by stupid-backoff score."""
        scores: dict[str, float] = {}
        levels = []
        if len(context) >= 2:
            levels.append((self.trigrams.get((context[-2], context[-1])), 1.0))
        if context:
            levels.append((self.bigrams.get(context[-1]), BACKOFF ** (len(levels))))
        levels.append((self.unigrams, BACKOFF ** len(levels)))
        higher: list[Counter] = []
        for counts, weight in levels:
            if not counts:
                continue
            total = sum(counts.values())
            # a word seen after a longer context is scored there; if it missed that level's top k, it misses the k overall
            candidates = [(w, c) for w, c in counts.most_common(k + sum(map(len, higher))) if not any(w in h for h in higher)]
            for word, count in candidates[:k]:
                scores.setdefault(word, weight * count / total)
            higher.append(counts)
        return sorted(scores, key=scores.get, reverse=True)[:k]
