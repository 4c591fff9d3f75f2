"""The generate hooks: the windowed n-gram repetition guard, per-sequence sampling and text streams."""

from __future__ import annotations

import threading

import torch

from dsocr.engines.generation import (
    BatchTextStreamer,
    NGramRepetitionGuard,
    PerRowSampling,
    StopAbandoned,
    never_banned_ids,
    sampling_arguments,
)
from dsocr.tiny.tokenizer import build_tokenizer

PROMPT = [900, 901, 902]  # stands for the prompt part of each row, never looked at


def scores_after(guard: NGramRepetitionGuard, rows: list[list[int]], vocab: int = 50) -> torch.Tensor:
    input_ids = torch.tensor([PROMPT + row for row in rows])
    return guard(input_ids, torch.zeros(len(rows), vocab))


def banned(scores: torch.Tensor, row: int = 0) -> set[int]:
    return set(torch.nonzero(scores[row] == float("-inf")).flatten().tolist())


def test_the_token_that_would_repeat_an_ngram_is_banned() -> None:
    guard = NGramRepetitionGuard(ngram_size=3, window=20, prompt_length=len(PROMPT), never_banned=())
    # ... 1 2 7 ... 1 2 -> "1 2 7" would repeat: 7 is banned; so is 9 ("1 2 9").
    assert banned(scores_after(guard, [[1, 2, 7, 5, 1, 2, 9, 4, 1, 2]])) == {7, 9}


def test_nothing_is_banned_without_a_repeat() -> None:
    guard = NGramRepetitionGuard(3, 20, len(PROMPT), ())
    assert banned(scores_after(guard, [[1, 2, 3, 4, 5, 6]])) == set()


def test_only_the_window_counts() -> None:
    guard = NGramRepetitionGuard(3, 5, len(PROMPT), ())
    # "1 2 7" lies more than 5 tokens back: allowed again.
    assert banned(scores_after(guard, [[1, 2, 7, 10, 11, 12, 13, 1, 2]])) == set()


def test_table_cell_tokens_are_never_banned() -> None:
    tokenizer = build_tokenizer()
    td, end_td = tokenizer.convert_tokens_to_ids(["<td>", "</td>"])
    assert never_banned_ids(tokenizer) == {td, end_td}
    guard = NGramRepetitionGuard(2, 20, len(PROMPT), never_banned_ids(tokenizer))
    rows = [[end_td, td, 5, end_td, td, 6, end_td]]  # after </td> come <td> (allowed) and nothing else yet
    assert banned(scores_after(guard, rows, vocab=max(td, end_td) + 1)) == set()


def test_each_row_of_a_batch_is_guarded_on_its_own() -> None:
    guard = NGramRepetitionGuard(2, 20, len(PROMPT), ())
    scores = scores_after(guard, [[3, 4, 3], [5, 6, 7]])
    assert banned(scores, 0) == {4} and banned(scores, 1) == set()


def test_the_prompt_is_not_part_of_the_window() -> None:
    guard = NGramRepetitionGuard(2, 20, prompt_length=4, never_banned=())
    input_ids = torch.tensor([[1, 2, 1, 2, 1]])  # prompt "1 2 1 2", generated "1"
    assert banned(guard(input_ids, torch.zeros(1, 10))) == set()


def test_streamer_passes_each_rows_text_on_and_stops_at_end_of_sentence() -> None:
    tokenizer = build_tokenizer()
    first = tokenizer.encode("Hello world\nsecond line", add_special_tokens=False)
    second = tokenizer.encode("Other text", add_special_tokens=False)
    pieces: list[list[str]] = [[], []]
    streamer = BatchTextStreamer(tokenizer, tokenizer.eos_token_id, [pieces[0].append, pieces[1].append])
    streamer.put(torch.tensor([[1, 2], [1, 2]]))  # the prompt comes first and is skipped
    steps = max(len(first), len(second)) + 1
    padded = [first + [tokenizer.eos_token_id] * (steps - len(first)), second + [tokenizer.eos_token_id] * (steps - len(second))]
    for step in range(steps):
        streamer.put(torch.tensor([padded[0][step], padded[1][step]]))
    streamer.end()
    assert "".join(pieces[0]) == "Hello world\nsecond line"
    assert "".join(pieces[1]) == "Other text"
    assert len(pieces[0]) > 1  # it came in pieces, not at the end


def test_streamer_skips_rows_without_a_listener() -> None:
    tokenizer = build_tokenizer()
    pieces: list[str] = []
    streamer = BatchTextStreamer(tokenizer, tokenizer.eos_token_id, [None, pieces.append])
    streamer.put(torch.tensor([[1], [1]]))
    for token in tokenizer.encode("a b c ", add_special_tokens=False):
        streamer.put(torch.tensor([token, token]))
    streamer.end()
    assert "".join(pieces) == "a b c "


def test_abandoned_rows_stop_and_the_others_go_on() -> None:
    flags = [threading.Event(), threading.Event()]
    stop = StopAbandoned(flags)
    assert stop(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 5)).tolist() == [False, False]
    flags[1].set()
    assert stop(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 5)).tolist() == [False, True]


def test_per_row_sampling_leaves_greedy_rows_their_best_token_and_scales_the_others() -> None:
    scores = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0], [0.5, 0.0, 4.0]])
    out = PerRowSampling([None, 0.5, None])(torch.zeros(3, 1, dtype=torch.long), scores.clone())
    inf = float("-inf")
    assert out.tolist() == [[inf, 3.0, inf], [2.0, 6.0, 4.0], [inf, inf, 4.0]]
    assert sampling_arguments([None, None]) == {"do_sample": False}
    assert sampling_arguments([None, 0.2])["do_sample"] is True
