"""`whisperlite search`: ranked hits in a batch output folder's full-text index."""
from __future__ import annotations

import json
import os

import click

from whisperlite.cli.common import fail, friendly_errors

EXAMPLES = """
\b
Examples:
  whisperlite search subs/ "fellow americans"
  whisperlite search subs/ '"ask not what your country"'     (a phrase)
  whisperlite search subs/ 'countr*' --limit 5                (a prefix)
  whisperlite search subs/ 'tax NOT income' --json            (one JSON object per hit)
  whisperlite search subs/ 经济                               (Chinese, Japanese: inside sentences too)
\b
The query is FTS5 syntax: words (all must occur), "phrases", prefix*, AND, OR, NOT, NEAR(…);
text that is not valid syntax is searched as its words. Chinese and Japanese text, written
without spaces, is found wherever its characters stand in that order. Hits are ranked by bm25.
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("output_dir", metavar="OUT_DIR", type=click.Path())
@click.argument("query")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per hit: episode, start, end, speaker, text, score (bm25, higher is better; "
                   "null when too many segments match to rank).")
@click.option("--speaker", default=None, metavar="NAME", help="Only segments of this speaker (case-insensitive).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="At most this many hits.")
@friendly_errors
def search(output_dir, query, as_json, speaker, limit):
    """Search the transcripts of a batch output folder OUT_DIR for QUERY, best hits first."""
    from whisperlite.batch.index import RANK_CAP, SearchIndex
    from whisperlite.batch.manifest import MANIFEST_NAME

    if not os.path.isfile(os.path.join(output_dir, MANIFEST_NAME)):
        fail(f"{output_dir}: not a batch output folder (no {MANIFEST_NAME})")
    if not query.strip():
        fail("empty query")
    with SearchIndex(output_dir, lambda line: click.echo(line, err=True)) as index:
        index.sync()
        hits, capped = index.search(query, speaker, limit)
    if capped:
        click.echo(f"note: over {RANK_CAP} segments match, too many to rank: the ones indexed last "
                   "(add words to narrow the search)", err=True)
    if as_json:
        for h in hits:
            click.echo(json.dumps({"episode": h.episode, "start": h.start, "end": h.end, "speaker": h.speaker,
                                   "text": h.text, "score": h.score if h.score is None else round(h.score, 4)}, ensure_ascii=False))
        return
    if not hits:
        click.echo(f"no hits for {query!r}", err=True)
        return
    width = max(len(h.episode) for h in hits)
    for h in hits:
        who = f"[{h.speaker}]  " if h.speaker else ""
        click.echo(f"{h.episode:<{width}}  {clock(h.start)}  {who}{h.text}")


def clock(seconds: float) -> str:
    """12.7 -> '00:00:12' (where to seek to hear the hit: its start, rounded down)."""
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
