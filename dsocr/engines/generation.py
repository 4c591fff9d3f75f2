"""Hooks into transformers' `generate` for batches: a per-sequence repetition guard, greedy and sampled sequences
in one batch, and per-sequence text streams."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

# Table cells legitimately repeat: upstream never bans these tokens (ids 128821/128822 in DeepSeek's vocabulary,
# looked up by text here so that any tokenizer works).
NEVER_BANNED_TOKENS = ("<td>", "</td>")


def never_banned_ids(tokenizer: Any) -> set[int]:
    ids = set()
    for token in NEVER_BANNED_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return ids


class NGramRepetitionGuard(LogitsProcessor):
    """Upstream's windowed n-gram blocker (vLLM's NGramPerReqLogitsProcessor), for each sequence of a batch.

    Among a sequence's last `window` generated tokens, wherever an earlier n-gram starts with the current last
    n-1 tokens, the token that completed it is banned, so a loop cannot go round again.
    """

    def __init__(self, ngram_size: int, window: int, prompt_length: int, never_banned: Iterable[int]) -> None:
        self.ngram_size = ngram_size
        self.window = window
        self.prompt_length = prompt_length
        self.never_banned = set(never_banned)

    def banned_tokens(self, tokens: list[int]) -> set[int]:
        n = self.ngram_size
        if len(tokens) < n:
            return set()
        suffix = tokens[len(tokens) - (n - 1):]
        banned = {tokens[start + n - 1] for start in range(len(tokens) - n + 1) if tokens[start:start + n - 1] == suffix}
        return banned - self.never_banned

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] < self.ngram_size:
            return scores
        for row, tokens in enumerate(generated[:, -self.window:].tolist()):
            banned = self.banned_tokens(tokens)
            if banned:
                scores[row, sorted(banned)] = float("-inf")
        return scores


class PerRowSampling(LogitsProcessor):
    """Lets one batch hold greedy and sampled sequences. `generate` then samples every row, so a greedy row (its
    temperature None) keeps only its best token, which sampling must pick, exactly as greedy decoding would; a
    sampled row's scores are divided by its temperature. Put last: it sees the scores the other processors left."""

    def __init__(self, temperatures: list[float | None]) -> None:
        self.greedy = torch.tensor([temperature is None for temperature in temperatures]).unsqueeze(1)
        self.temperatures = torch.tensor([temperature or 1.0 for temperature in temperatures]).unsqueeze(1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = scores.argmax(dim=-1, keepdim=True)
        only_best = torch.full_like(scores, float("-inf")).scatter(1, best, scores.gather(1, best))
        sampled = scores / self.temperatures.to(scores.device, scores.dtype)
        return torch.where(self.greedy.to(scores.device), only_best, sampled)


def sampling_arguments(temperatures: list[float | None]) -> dict[str, Any]:
    """`generate`'s arguments for a batch: upstream's greedy decoding when no row samples; otherwise sampling with
    nothing but PerRowSampling shaping it (no top-k, top-p or temperature of the checkpoint's generation config)."""
    if all(temperature is None for temperature in temperatures):
        return {"do_sample": False}
    return {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


class StopAbandoned(StoppingCriteria):
    """Ends the sequences whose requests nobody waits for any more; the rest of the batch goes on."""

    def __init__(self, abandoned: list[threading.Event]) -> None:
        self.abandoned = abandoned

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        flags = [event.is_set() for event in self.abandoned]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


class _RowText:
    """Turns one sequence's tokens into text pieces as they come (like transformers' TextStreamer, per row)."""

    def __init__(self, tokenizer: Any, eos_id: int | None, on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.on_text = on_text
        self.tokens: list[int] = []
        self.sent = 0
        self.finished = False

    def push(self, token: int) -> None:
        if self.finished:
            return
        if token == self.eos_id:
            self.flush()
            self.finished = True
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=False)
        if text.endswith("\n"):  # a line is final: start the next one afresh
            self._send(text[self.sent:])
            self.tokens, self.sent = [], 0
        elif not text.endswith("\ufffd"):  # hold back half a multi-byte character
            end = text.rfind(" ") + 1  # later tokens can still change the last word
            if end > self.sent:
                self._send(text[self.sent:end])
                self.sent = end

    def flush(self) -> None:
        if self.tokens:
            text = self.tokenizer.decode(self.tokens, skip_special_tokens=False)
            self._send(text[self.sent:])
            self.tokens, self.sent = [], 0

    def _send(self, piece: str) -> None:
        if piece:
            self.on_text(piece)


class BatchTextStreamer(BaseStreamer):
    """Receives each step's new token of every sequence from `generate` and passes text on per sequence."""

    def __init__(self, tokenizer: Any, eos_id: int | None, callbacks: list[Callable[[str], None] | None]) -> None:
        self.rows = [_RowText(tokenizer, eos_id, callback) if callback else None for callback in callbacks]
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first hands over the prompt
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(len(self.rows), -1)[:, -1].tolist()):
            if row is not None:
                row.push(token)

    def end(self) -> None:
        for row in self.rows:
            if row is not None:
                row.flush()
