"""STAND-IN for the remote code of the original DeepSeek-OCR checkpoints (modeling_deepseekocr.py).

The real code and weights cannot be downloaded on the machines that run these tests. This file is copied into a
test checkpoint folder whose config.json points at it through `auto_map`, so that the service loads it exactly
as it loads the real thing: `AutoModel.from_pretrained(..., trust_remote_code=True)` and `model.infer(...)`.

`infer` has upstream's signature and behaviour where the service depends on it: it reads the image file, prints
while it works, asks `self.generate` for at most 8192 new tokens, returns None unless `eval_mode=True`, and then
returns the decoded answer without its end-of-sentence token. The answer is the one the test wrote into
`answer.json` beside this file (its `sampled_text` instead when `generate` is asked to sample, as the service asks
for a page read again); every call is recorded in `calls.jsonl` and the load arguments in `load.json`.
"""

import json
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import PretrainedConfig, PreTrainedModel

UPSTREAM_MAX_NEW_TOKENS = 8192  # hard-coded in upstream's infer


class StandInOcrConfig(PretrainedConfig):
    model_type = "deepseek_vl_v2"


class StandInOcrModel(PreTrainedModel):
    config_class = StandInOcrConfig
    _supports_flash_attn_2 = True  # upstream's code has eager and flash-attention layers only

    def __init__(self, config):
        super().__init__(config)
        self.anchor = torch.nn.Linear(2, 2)  # some weights for safetensors to hold
        self.scripted = []
        self.scripted_sampled = None
        self.generate_calls = []
        self.generate_temperatures = []
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # AutoModel may hand the attention choice over inside the config rather than as an argument.
        config = kwargs.get("config")
        attn = kwargs.get("_attn_implementation") or getattr(config, "_attn_implementation_internal", None)
        record = {"use_safetensors": kwargs.get("use_safetensors"), "_attn_implementation": attn}
        (Path(pretrained_model_name_or_path) / "load.json").write_text(json.dumps(record))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def generate(self, input_ids, max_new_tokens=20, eos_token_id=None, stopping_criteria=None, **kwargs):
        """Token by token, like transformers' generate: stopping criteria are asked after each token."""
        self.generate_calls.append(max_new_tokens)
        sampled = kwargs.get("do_sample") and self.scripted_sampled is not None
        self.generate_temperatures.append(kwargs.get("temperature") if kwargs.get("do_sample") else 0.0)
        scripted = self.scripted_sampled if sampled else self.scripted
        new = scripted[:max_new_tokens]
        if len(scripted) < max_new_tokens:
            new = new + [eos_token_id]
        output = input_ids
        for token in new:
            time.sleep(self.token_delay_s)
            output = torch.cat([output, torch.tensor([[token]], dtype=input_ids.dtype)], dim=1)
            if stopping_criteria and any(bool(criterion(output, None).all()) for criterion in stopping_criteria):
                break
        return output

    def infer(self, tokenizer, prompt="", image_file="", output_path=" ", base_size=1024, image_size=640,
              crop_mode=True, test_compress=False, save_results=False, eval_mode=False):
        folder = Path(self.config._name_or_path)
        script = json.loads((folder / "answer.json").read_text())
        with Image.open(image_file) as image:
            pixels = list(image.size)
        call = {
            "prompt": prompt, "image_file": image_file, "image_pixels": pixels, "output_path": output_path,
            "base_size": base_size, "image_size": image_size, "crop_mode": crop_mode,
            "test_compress": test_compress, "save_results": save_results, "eval_mode": eval_mode,
            "training": self.training, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
        }
        print("=====================\nBASE: stand-in streaming output, not the answer\n=====================")
        if script.get("raise"):
            self._record(folder, call)
            raise RuntimeError(script["raise"])
        self.scripted = tokenizer.encode(script["text"], add_special_tokens=False)
        sampled_text = script.get("sampled_text")
        self.scripted_sampled = None if sampled_text is None else tokenizer.encode(sampled_text, add_special_tokens=False)
        self.token_delay_s = script.get("token_delay_s", 0.0)
        prompt_ids = torch.tensor([tokenizer.encode(prompt)])
        self.generate_calls = []
        self.generate_temperatures = []
        (folder / "generating").touch()  # tests wait on this to act while tokens are being generated
        output = self.generate(prompt_ids, max_new_tokens=UPSTREAM_MAX_NEW_TOKENS,
                               eos_token_id=tokenizer.eos_token_id, temperature=0.0, no_repeat_ngram_size=35)
        call["generate_max_new_tokens"] = self.generate_calls
        call["generate_temperatures"] = self.generate_temperatures
        call["generated_tokens"] = output.shape[1] - prompt_ids.shape[1]
        self._record(folder, call)
        text = tokenizer.decode(output[0, prompt_ids.shape[1]:].tolist())
        print(text)
        if not eval_mode:
            return None
        stop = tokenizer.eos_token
        if text.endswith(stop):
            text = text[: -len(stop)]
        return text.strip()

    @staticmethod
    def _record(folder, call):
        with (folder / "calls.jsonl").open("a") as log:
            log.write(json.dumps(call) + "\n")
