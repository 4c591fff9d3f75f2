"""Builds a tiny RANDOM DeepSeek-OCR (v1) checkpoint in the original layout, for a real vLLM server started with
`--load-format dummy`.

vLLM fills every weight with random values itself under `--load-format dummy`, so the folder holds no weights:
only `config.json` (the original deepseek-ai/DeepSeek-OCR layout: `DeepseekOCRForCausalLM`, model_type
`deepseek_vl_v2`, a `deepseek_v2` language model), `generation_config.json` and the tokenizer files (~45 KB in
all). The language model is toy-sized; the vision towers (SAM ViT-B, CLIP-L/14) are built by vLLM at full size
whatever the config says, so `vision_config` mirrors the official one. The answers are random text, but greedy
(temperature 0) answers are identical across repeated requests: tests check protocol, shapes and determinism,
never OCR text.

Only needs the service's test environment (transformers, tokenizers): build the folder there, then start vLLM
from its own environment (see vllm_cpu_env.sh) on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiny_tokenizer import BOS, EOS, PAD, build_tokenizer

ARCHITECTURE = "DeepseekOCRForCausalLM"
MODEL_TYPE = "deepseek_vl_v2"
# vLLM serves the model under this name (`--served-model-name`), as the real one would be.
SERVED_MODEL_NAME = "deepseek-ai/DeepSeek-OCR"

# The official vision_config, verbatim: vLLM ignores it (it builds SAM ViT-B and CLIP-L/14 at full size).
OFFICIAL_VISION_CONFIG: dict[str, Any] = {
    "image_size": 1024,
    "mlp_ratio": 3.7362,
    "model_name": "deeplip_b_l",
    "model_type": "vision",
    "width": {
        "clip-l-14-224": {"heads": 16, "image_size": 224, "layers": 24, "patch_size": 14, "width": 1024},
        "sam_vit_b": {
            "downsample_channels": [512, 1024],
            "global_attn_indexes": [2, 5, 8, 11],
            "heads": 12,
            "layers": 12,
            "width": 768,
        },
    },
}

HIDDEN_SIZE = 128


def tiny_language_config(vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """DeepSeek-V2 MoE at toy size, plain multi-head attention as in DeepSeek-OCR (no MLA: `use_mla` false,
    no LoRA ranks, zero qk/v head dims): 2 layers, the first dense, the second with 4 routed experts (top-2)
    and 1 shared one; 2 heads of 64."""
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": 256,
        "moe_intermediate_size": 64,
        "num_hidden_layers": 2,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "n_group": 1,
        "topk_group": 1,
        "topk_method": "greedy",
        "scoring_func": "softmax",
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "use_mla": False,
        "kv_lora_rank": None,
        "q_lora_rank": None,
        "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0,
        "v_head_dim": 0,
        "lm_head": True,
        "rm_head": False,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def build_vllm_checkpoint(folder: Path) -> Path:
    """Writes a tiny random original-layout DeepSeek-OCR (v1) folder for vLLM's `--load-format dummy` into
    `folder` (config, generation config, tokenizer; no weights) and returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (BOS, EOS, PAD)}
    bos_id, eos_id, pad_id = ids[BOS], ids[EOS], ids[PAD]

    # The original DeepSeek-OCR tokenizer is a byte-level BPE under LlamaTokenizerFast, which vLLM's
    # DeepSeek-OCR processor expects; no chat template, so vLLM uses its own DeepSeek-OCR one.
    tokenizer_config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text())
    tokenizer_config.update(
        tokenizer_class="LlamaTokenizerFast",
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        add_bos_token=True,  # like the original: encoding prepends begin-of-sentence
        add_eos_token=False,
        model_max_length=8192,
        padding_side="left",
    )
    tokenizer_config.pop("chat_template", None)
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))

    vocab_size = len(tokenizer)
    config = {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "tile_tag": "2D",
        "language_config": tiny_language_config(vocab_size, bos_id, eos_id, pad_id),
        "projector_config": {
            "input_dim": 2048,
            "model_type": "mlp_projector",
            "n_embed": HIDDEN_SIZE,
            "projector_type": "linear",
        },
        "vision_config": OFFICIAL_VISION_CONFIG,
        "vocab_size": vocab_size,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        # float32: bfloat16 is several times slower on CPUs without AVX-512 BF16 (pass --dtype anyway).
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    generation_config = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
    return folder


if __name__ == "__main__":
    import sys

    print(build_vllm_checkpoint(Path(sys.argv[1])))
