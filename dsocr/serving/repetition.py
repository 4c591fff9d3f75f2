"""What a page that looped looks like: its text ends in a span repeated over and over (`repeated_tail`), which
`cut_repeated_tail` reduces to one copy.

The definition: the tail is repeated when, for the shortest period p that fits, the text's last characters are
copies of one p-character span, at least MIN_COPIES whole copies (a last, partial copy is counted in, as a token
cap leaves it) and at least MIN_REPEATED_CHARS characters in all. Runs of whitespace count as one space, so that a
loop whose copies differ only in line breaks or spacing is still one. Copies must be exact otherwise: near-repeats
(a counter that goes up, "1. item 2. item ...") are left alone, because a table's rows of figures look exactly
like that once digits are ignored; such a page still ends by the token cap, which is reason enough to read it
again. Table rows with different cells differ, so they never form a repeated tail; a table that closes (`</table>`)
or any text after the repeats means the model left the loop by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Three copies in a row: two could be a heading and its echo; a loop goes on far longer (to the token cap).
MIN_COPIES = 3
# About three lines of text: shorter runs (a line of dots, "ha ha ha", a form's three blank answer lines) are
# written that way on purpose; a loop of a short span easily runs past this.
MIN_REPEATED_CHARS = 200

# Where a cut of a repeated tail looks deliberate, best first.
CUT_BOUNDARIES = ("\n", "</tr>", "</td>", " ", ">")

_WHITESPACE_OR_WORD = re.compile(r"\s+|\S+")


@dataclass(frozen=True)
class RepeatedTail:
    keep: int  # the text up to here stays: what came before the repeats, and (at least) their first copy
    span: str  # one copy of what is repeated (whitespace as one space)
    copies: float  # how many copies the tail holds (a partial last copy counts as its fraction)


def repeated_tail(text: str) -> RepeatedTail | None:
    """The repeated span the text ends in (see the module's definition), or None."""
    normal, origin = _normalised(text.rstrip())
    n = len(normal)
    for period in range(1, n // MIN_COPIES + 1):
        # Walk back while each character equals the one a period earlier: [start, n) repeats with this period.
        i = n - 1
        while i >= period and normal[i] == normal[i - period]:
            i -= 1
        start = i - period + 1 if i >= period else 0
        length = n - start
        if length >= MIN_COPIES * period and length >= MIN_REPEATED_CHARS:
            first_end = origin[start + period - 1] + 1
            second_end = origin[min(start + 2 * period, n) - 1] + 1
            return RepeatedTail(_boundary(text, first_end, second_end), normal[start:start + period], length / period)
    return None


def _boundary(text: str, first_end: int, second_end: int) -> int:
    """Where to cut between the end of the first copy and the end of the second: the copies' phase is wherever
    the match began (maybe mid-word, or inside a cell), so the cut moves on to the first line end, table row or
    cell end, space or tag end there, in that order of preference; any cut in that range keeps one whole copy."""
    for boundary in CUT_BOUNDARIES:
        found = text.find(boundary, first_end - len(boundary), second_end - 1)
        if found != -1:
            return found + len(boundary)
    return first_end


def cut_repeated_tail(text: str, tail: RepeatedTail) -> str:
    """The text with its repeated tail reduced to the first copy."""
    return text[:tail.keep].rstrip()


def _normalised(text: str) -> tuple[str, list[int]]:
    """The text with every run of whitespace as one space, and where each of its characters was in `text`."""
    characters: list[str] = []
    origin: list[int] = []
    for match in _WHITESPACE_OR_WORD.finditer(text):
        if match.group().isspace():
            characters.append(" ")
            origin.append(match.end() - 1)  # a cut after the space keeps the whole run
        else:
            characters.extend(match.group())
            origin.extend(range(match.start(), match.end()))
    return "".join(characters), origin
