"""Words as topic evidence: tokens, stopwords, a light English stemmer and TF-IDF vectors.

Lexical cohesion asks whether two stretches of a transcript talk about the same things, so
only content words count: function words are dropped, and inflections are folded together
(planets/planet, cooking/cooked/cook) by stripping common suffixes. The stemmer is a small
subset of Porter's steps, enough to merge the forms a speech model writes; it never has to
produce real words, only the same stem for the same word family.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

_WORD = re.compile(r"[a-z][a-z']*")

STOPWORDS = frozenset("""
a about above after again against all almost also although always am among an and another any anyone anything
are around as at away back be because been before being below between both but by can cannot could did do does
doing done down during each either else even ever every few first for from further get gets getting give go goes
going gone good got had has have having he her here hers herself him himself his how however i if in into is it
its itself just know last least less let like likely little look made make makes many may me might mine more
most much must my myself need needs never new next no nor not now of off often oh okay on once one only or other
others our ours ourselves out over own part per perhaps put quite rather really right said same say says see
seem seems shall she should since so some something still such take than that the their theirs them themselves
then there these they thing things think this those though through thus to too two under until up upon us use
used very want was way we well were what whatever when where whether which while who whom whose why will with
within without would yeah yes yet you your yours yourself yourselves
""".split())

# Longest first: the first suffix that leaves a stem of at least three letters is removed.
_SUFFIXES = sorted((
    "ational", "tional", "ization", "ations", "ation", "ements", "ement", "ments", "ment", "ness", "ities", "ity",
    "ingly", "edly", "ings", "ing", "ies", "ied", "ers", "er", "est", "ed", "es", "s", "ly", "ful", "ous", "ive",
    "al", "ence", "ance", "able", "ible",
), key=len, reverse=True)


def stem(word: str) -> str:
    """A word's stem: 'planets' -> 'planet', 'cooking' -> 'cook', 'stories' -> 'stor'."""
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "")
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":  # running -> runn -> run
        word = word[:-1]
    if word.endswith("e") and len(word) > 3:  # serve/serving/served -> serv
        word = word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The content-word stems of `text`, in order."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 2]


class TfIdf:
    """Inverse document frequencies over a set of documents (here: a transcript's sentences)."""

    def __init__(self, docs: Sequence[Sequence[str]]):
        df = Counter(t for doc in docs for t in set(doc))
        n = max(len(docs), 1)
        # smoothed as scikit-learn's: a term in every document still weighs a little
        self.idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}

    def vector(self, docs: Iterable[Sequence[str]]) -> dict[str, float]:
        """The TF-IDF vector of several documents taken as one block of text."""
        tf: Counter[str] = Counter()
        for doc in docs:
            tf.update(doc)
        return {t: c * self.idf.get(t, 0.0) for t, c in tf.items()}


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if not a or not b:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    dot = sum(v * b.get(t, 0.0) for t, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0
