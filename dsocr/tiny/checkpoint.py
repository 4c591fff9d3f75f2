"""Builds tiny, randomly initialised DeepSeek-OCR-2 checkpoints in the native transformers layout.

They use the very same classes as the real 6-7 GB checkpoint (`DeepseekOcr2ForConditionalGeneration`,
`DeepseekOcr2Processor`) at toy sizes, so the service's real loading, preprocessing and generation code runs on
them; only the text is random. Random weights never emit end-of-sequence: cap max_new_tokens.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    DeepseekOcr2Config,
    DeepseekOcr2ForConditionalGeneration,
    DeepseekOcr2ImageProcessorPil,
    DeepseekOcr2Processor,
    GenerationConfig,
    PreTrainedTokenizerFast,
)

from dsocr.tiny.tokenizer import build_tokenizer


def tiny_config(tokenizer: PreTrainedTokenizerFast) -> DeepseekOcr2Config:
    """The real architecture at toy width and depth; image geometry (16 px patches, 4x downsampling,
    1024/768 views) stays as in the real model because its learned queries are sized for it."""
    vocab_size = len(tokenizer)
    return DeepseekOcr2Config(
        vision_config={
            "sam_config": {
                "hidden_size": 16,
                "output_channels": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "global_attn_indexes": [1],
                "window_size": 8,
                "downsample_channels": [16, 32],
                "initializer_range": 0.02,  # the default (1e-10) would make every image look alike
            },
            "encoder_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "vocab_size": vocab_size,
            },
        },
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "n_routed_experts": 4,
            "n_shared_experts": 1,
            "num_experts_per_tok": 2,
            "mlp_layer_types": ["dense", "sparse"],
            "max_position_embeddings": 4096,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )


def build_native_checkpoint(folder: Path, seed: int = 0, stops_at_once: bool = False) -> Path:
    """Writes config, safetensors weights, tokenizer and processor into `folder` and returns it.

    With `stops_at_once` the text model's final norm is zeroed: every logit is 0, greedy decoding picks id 0,
    which is end-of-sentence, so the model ends its answer at once (random weights otherwise never do).
    """
    import torch

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    processor = DeepseekOcr2Processor(image_processor=DeepseekOcr2ImageProcessorPil(), tokenizer=tokenizer)
    model = DeepseekOcr2ForConditionalGeneration(tiny_config(tokenizer)).eval()
    if stops_at_once:
        with torch.no_grad():
            model.model.language_model.norm.weight.zero_()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
