"""A small tokenizer with DeepSeek-OCR's special tokens, for the tiny checkpoints (the demo's, the tests' of both
layouts)."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
# The special tokens of the DeepSeek-OCR tokenizer that the service and its cleaning rely on. EOS comes first
# (id 0) so that a checkpoint whose logits are all equal answers end-of-sentence at once (see `stops_at_once`).
SPECIAL_TOKENS = [EOS, BOS, PAD, "<image>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>"]
# Table cells are ordinary added tokens upstream; the repetition guard looks them up by text.
TABLE_TOKENS = ["<td>", "</td>"]

_CORPUS = [
    "Convert the document to markdown.",
    "OCR this image. Free OCR. Parse the figure. Describe this image in detail.",
    "Locate the title in the image.",
    "# Heading\n\nBody text with numbers 0123456789 and [[330, 198, 559, 230]] boxes.",
    "title text image table caption formula list header footer",
]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer carrying DeepSeek-OCR's special tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    # Like DeepSeek's tokenizer, every encoded text starts with the begin-of-sentence token.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )
    fast.add_tokens(TABLE_TOKENS)
    return fast
