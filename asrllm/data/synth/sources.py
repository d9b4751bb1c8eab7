"""Readers of the public-domain English that the synthetic corpus is cut from, each from a Debian
package: the KJV Bible (bible-kjv, through its `bible` reader), fortune-mod's fortunes and WordNet's
example sentences (wordnet-base). Each returns raw passages; asrllm.data.synth.text selects from them.
A missing package is a RuntimeError that names the apt package."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

# Fortune files of fortune-mod that are mostly prose sentences. Left out: pictures (art, ascii-art),
# code and chat logs (perl, linux, linuxcookie, knghtbrd, debian), non-English (translate-me), lists
# of names (startrek, zippy), and the files whose humour is about groups of people (ethnic,
# men-women, drugs).
DEFAULT_FORTUNE_FILES = tuple(
    "computers cookie definitions education food fortunes goedel humorists kids law literature love "
    "magic medicine miscellaneous news paradoxum people pets platitudes riddles science songs-poems "
    "sports tao wisdom work".split()
)



_VERSE = re.compile(r"^\s+\d+ (.*\S)\s*$")
_WORDNET_EXAMPLE = re.compile(r'"([^"]+)"')
_DIALOGUE_LABEL = re.compile(r"^[A-Za-z]+:\s+")


def read_kjv(bible_command: str = "bible") -> list[str]:
    """All KJV verses, one string each, via bible-kjv's `bible` reader."""
    cmd = [bible_command, "-l0", "gen1:1-rev22:21"]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"cannot read the KJV with {cmd} (apt-get install bible-kjv): {e}") from None
    verses = [m.group(1) for m in map(_VERSE.match, out.splitlines()) if m]
    if len(verses) < 30000:
        raise RuntimeError(f"{cmd} printed only {len(verses)} verses; expected about 31,000")
    return verses


def parse_fortunes(text: str) -> list[str]:
    """Fortunes of one fortune-mod file (entries separated by '%' lines), with attributions
    ("-- Author") and dialogue labels ("Q:", "Salesman:") removed.

    >>> parse_fortunes("Be kind.\\n\\t\\t-- Someone\\n%\\nQ: Second one\\nA: with two lines.\\n%\\n")
    ['Be kind.', 'Second one with two lines.']
    """
    entries = []
    for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = [_DIALOGUE_LABEL.sub("", ln.strip()) for ln in entry.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("--")]
        if lines:
            entries.append(" ".join(lines))
    return entries


def read_fortunes(fortunes_dir: str | Path, files: Sequence[str]) -> list[str]:
    """Fortunes of the given fortune-mod files, in file order."""
    out: list[str] = []
    for name in files:
        path = Path(fortunes_dir) / name
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise RuntimeError(f"cannot read fortune file {path} (apt-get install fortunes): {e}") from None
        out.extend(parse_fortunes(text))
    return out


def parse_wordnet_examples(line: str) -> list[str]:
    """Quoted example sentences in the gloss of one WordNet data.* line.

    >>> parse_wordnet_examples('00045646 04 n 02 rally 1 | a feat; "he started a rally"; "it ended"  ')
    ['he started a rally', 'it ended']
    """
    _, bar, gloss = line.partition(" | ")
    return _WORDNET_EXAMPLE.findall(gloss) if bar else []


def read_wordnet_examples(wordnet_dir: str | Path) -> list[str]:
    """Example sentences of all WordNet synsets (nouns, verbs, adjectives, adverbs)."""
    out: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(wordnet_dir) / f"data.{pos}"
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.startswith("  "):  # licence header lines start with two spaces
                        out.extend(parse_wordnet_examples(line))
        except OSError as e:
            raise RuntimeError(f"cannot read {path} (apt-get install wordnet-base): {e}") from None
    return out
