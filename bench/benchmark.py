"""Throughput under concurrency: the seed's one-at-a-time serving (batch size 1) against batching, side by side.

Starts `uvicorn app:app` on a loopback port, fires N concurrent OCR requests, and prints pages/s, p50/p95 latency
and /health p99 for each batch size, with their ratio.

    python bench/benchmark.py                  # CPU: a tiny random checkpoint (tests/tiny_checkpoint.py)
    python bench/benchmark.py --gpu            # a lent GPU: full-size random DeepSeek-OCR-2, 512 tokens a page
    python bench/benchmark.py --engine vllm --vllm-url http://127.0.0.1:8001 [--vllm-url ...]
                                               # the service in front of vLLM against the same pages sent
                                               # straight to vLLM: the front's overhead as a ratio

Random weights never end their answers, so every page generates exactly --max-new-tokens tokens: the figures are
those of a page of that length, not of real OCR output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the service's code, and the tests' helpers

from live_server import Server, metric  # noqa: E402

# The published DeepSeek-OCR-2 sizes: DeepSeek-3B-MoE decoder (12 layers, 64 routed experts, 6 active, first layer
# dense), SAM ViT-B, Qwen2-0.5B as the visual encoder (transformers' conversion script).
FULL_TEXT_CONFIG = {
    "vocab_size": 129280, "hidden_size": 1280, "intermediate_size": 6848, "moe_intermediate_size": 896,
    "num_hidden_layers": 12, "num_attention_heads": 10, "num_key_value_heads": 10, "n_routed_experts": 64,
    "n_shared_experts": 2, "num_experts_per_tok": 6, "max_position_embeddings": 8192,
    "mlp_layer_types": ["dense"] + ["sparse"] * 11,
}
FULL_ENCODER_CONFIG = {
    "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "intermediate_size": 4864, "rms_norm_eps": 1e-6, "vocab_size": 1,
}


def build_full_size_checkpoint(folder: Path) -> Path:
    """A randomly initialised DeepSeek-OCR-2 of the real configuration's sizes, in bfloat16."""
    import torch
    from transformers import (DeepseekOcr2Config, DeepseekOcr2ForConditionalGeneration,
                              DeepseekOcr2ImageProcessorPil, DeepseekOcr2Processor, GenerationConfig)

    from tiny_tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = DeepseekOcr2Config(
        vision_config={"sam_config": {"initializer_range": 0.02}, "encoder_config": FULL_ENCODER_CONFIG},
        text_config={**FULL_TEXT_CONFIG, **ids},
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = DeepseekOcr2ForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    DeepseekOcr2Processor(image_processor=DeepseekOcr2ImageProcessorPil(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def page_image(index: int, size: tuple[int, int]) -> bytes:
    """A page with some text-like strokes, different per request."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for line in range(20):
        y = 40 + line * (size[1] - 80) // 20
        draw.text((40, y), f"Page {index} line {line}: lorem ipsum dolor sit amet {index * line}", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Figures:
    batch_size: int
    pages_per_s: float
    p50_s: float
    p95_s: float
    health_p99_ms: float
    tokens_per_page: float
    batches: float


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def fire(server: Server, pages: list[bytes], mode: str) -> tuple[float, list[float], list[float]]:
    health: list[float] = []
    done = asyncio.Event()

    async def probe(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            started = time.perf_counter()
            await client.get(f"{server.url}/health")
            health.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)

    async def one(client: httpx.AsyncClient, data: bytes) -> float:
        started = time.perf_counter()
        response = await client.post(f"{server.url}/api/ocr", files={"image": ("page.png", data)}, data={"mode": mode})
        response.raise_for_status()
        return time.perf_counter() - started

    limits = httpx.Limits(max_connections=len(pages) + 4)
    async with httpx.AsyncClient(timeout=3600, limits=limits) as client:
        prober = asyncio.create_task(probe(client))
        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(client, data) for data in pages))
        wall = time.perf_counter() - started
        done.set()
        await prober
    return wall, list(latencies), health


def measure(checkpoint: Path, batch_size: int, args: argparse.Namespace, runs: Path) -> Figures:
    env = {
        "DEEPSEEK_OCR_MODEL_PATH": str(checkpoint), "DEEPSEEK_OCR_RUNS_DIR": str(runs),
        "DEEPSEEK_OCR_MAX_BATCH_SIZE": str(batch_size), "DEEPSEEK_OCR_MAX_NEW_TOKENS": str(args.max_new_tokens),
        "DEEPSEEK_OCR_BATCH_WAIT_MS": str(args.batch_wait_ms), "DEEPSEEK_OCR_MAX_QUEUE": str(args.requests + 8),
        "DEEPSEEK_OCR_REQUEST_TIMEOUT_S": "3600",
    }
    if args.gpu:
        env["DEEPSEEK_OCR_DEVICE"] = "cuda"
    server = Server(env)
    try:
        server.wait_ready()
        asyncio.run(fire(server, [page_image(0, args.image_size)], args.mode))  # warm-up
        tokens_before = metric(server.url, "deepseek_ocr_generated_tokens_total")
        batches_before = metric(server.url, "deepseek_ocr_batch_size_count")
        pages = [page_image(i + 1, args.image_size) for i in range(args.requests)]
        wall, latencies, health = asyncio.run(fire(server, pages, args.mode))
        tokens = metric(server.url, "deepseek_ocr_generated_tokens_total") - tokens_before
        batches = metric(server.url, "deepseek_ocr_batch_size_count") - batches_before
    finally:
        server.stop()
    return Figures(batch_size, len(pages) / wall, statistics.median(latencies), percentile(latencies, 0.95),
                   percentile(health, 0.99) if health else float("nan"), tokens / len(pages), batches)


async def fire_direct(urls: list[str], pages: list[bytes], max_tokens: int) -> tuple[float, list[float]]:
    """The same pages as chat completions straight to the vLLM servers (round robin), as the service sends them."""
    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=len(pages) + 4)) as client:
        model = (await client.get(f"{urls[0]}/v1/models")).json()["data"][0]["id"]

        async def one(index: int, data: bytes) -> float:
            url = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            body = {"model": model, "temperature": 0, "max_tokens": max_tokens, "skip_special_tokens": False,
                    "stream": True, "messages": [{"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": "<|grounding|>Convert the document to markdown."}]}]}
            started = time.perf_counter()
            async with client.stream("POST", f"{urls[index % len(urls)]}/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for _ in response.aiter_lines():
                    pass
            return time.perf_counter() - started

        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(i, data) for i, data in enumerate(pages)))
        return time.perf_counter() - started, list(latencies)


def measure_vllm(args: argparse.Namespace, runs: Path) -> None:
    pages = [page_image(i + 1, args.image_size) for i in range(args.requests)]
    asyncio.run(fire_direct(args.vllm_url, pages[:1], args.max_new_tokens))  # warm-up
    direct_wall, direct_latencies = asyncio.run(fire_direct(args.vllm_url, pages, args.max_new_tokens))
    server = Server({
        "DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_VLLM_URLS": ",".join(args.vllm_url),
        "DEEPSEEK_OCR_RUNS_DIR": str(runs), "DEEPSEEK_OCR_MAX_NEW_TOKENS": str(args.max_new_tokens),
        "DEEPSEEK_OCR_MAX_QUEUE": str(args.requests + 8), "DEEPSEEK_OCR_REQUEST_TIMEOUT_S": "3600",
    })
    try:
        server.wait_ready()
        asyncio.run(fire(server, pages[:1], "gundam"))  # warm-up
        wall, latencies, health = asyncio.run(fire(server, pages, "gundam"))
    finally:
        server.stop()
    print(f"\n{args.requests} concurrent pages, {args.image_size[0]}x{args.image_size[1]} px, at most "
          f"{args.max_new_tokens} new tokens a page, {len(args.vllm_url)} vLLM server(s)")
    print(f"{'path':>22} {'pages/s':>9} {'p50 s':>8} {'p95 s':>8}")
    print(f"{'straight to vLLM':>22} {len(pages) / direct_wall:>9.3f} {statistics.median(direct_latencies):>8.2f} "
          f"{percentile(direct_latencies, 0.95):>8.2f}")
    print(f"{'service in front':>22} {len(pages) / wall:>9.3f} {statistics.median(latencies):>8.2f} "
          f"{percentile(latencies, 0.95):>8.2f}   /health p99 {percentile(health, 0.99):.1f} ms")
    print(f"front / direct throughput: {direct_wall / wall:.1%} (goal: at least 95%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="full-size random DeepSeek-OCR-2 on CUDA")
    parser.add_argument("--requests", type=int, default=16, help="concurrent requests (pages)")
    parser.add_argument("--batch-size", type=int, default=8, help="the batched configuration to compare with 1")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per page (default 32 on CPU, 512 on GPU)")
    parser.add_argument("--batch-wait-ms", type=float, default=10)
    parser.add_argument("--mode", default="base")
    parser.add_argument("--image-size", type=int, nargs=2, default=(1000, 1400), metavar=("W", "H"))
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of building one")
    parser.add_argument("--engine", choices=("local", "vllm"), default="local",
                        help="local: batch size 1 against batching in this process; vllm: front against direct")
    parser.add_argument("--vllm-url", action="append", default=[], help="a vLLM server (repeat for several)")
    args = parser.parse_args()
    args.max_new_tokens = args.max_new_tokens or (512 if args.gpu else 32)
    if args.engine == "vllm":
        if not args.vllm_url:
            parser.error("--engine vllm needs --vllm-url")
        with tempfile.TemporaryDirectory() as scratch:
            measure_vllm(args, Path(scratch) / "runs")
        return

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = Path(scratch) / "checkpoint"
            if args.gpu:
                build_full_size_checkpoint(checkpoint)
            else:
                from tiny_checkpoint import build_native_checkpoint

                build_native_checkpoint(checkpoint)
        results = [measure(checkpoint, size, args, Path(scratch) / f"runs-{size}") for size in (1, args.batch_size)]

    import torch

    device = torch.cuda.get_device_name(0) if args.gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{args.requests} concurrent pages, mode {args.mode}, {args.image_size[0]}x{args.image_size[1]} px, "
          f"{args.max_new_tokens} new tokens a page, {'full-size' if args.gpu else 'tiny'} random checkpoint, {device}")
    print(f"{'batch size':>10} {'pages/s':>9} {'p50 s':>8} {'p95 s':>8} {'/health p99 ms':>15} {'tokens/page':>12} {'batches':>8}")
    for r in results:
        print(f"{r.batch_size:>10} {r.pages_per_s:>9.3f} {r.p50_s:>8.2f} {r.p95_s:>8.2f} {r.health_p99_ms:>15.1f} "
              f"{r.tokens_per_page:>12.0f} {r.batches:>8.0f}")
    print(f"throughput ratio (batch {args.batch_size} / batch 1): {results[1].pages_per_s / results[0].pages_per_s:.2f}x")


if __name__ == "__main__":
    main()
