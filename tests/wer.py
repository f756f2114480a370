"""Word error rate as the benchmarks and the tests both judge transcripts: lower case,
everything but letters, digits and spaces dropped, edits / reference length.

It lives with the tests and `scripts/bench_transcribe.py` imports it from here, so a test
that says "the transcript is right" means what a benchmark's WER column means."""


def normalize(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def wer(ref: list, hyp: list) -> float:
    """Edit distance (substitutions + insertions + deletions) / len(ref), over any sequences
    (words, or characters for a character error rate)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(ref))
