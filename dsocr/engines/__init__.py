"""Loading a checkpoint and running it (transformers' native classes, or the original remote code), or talking to
one vLLM server."""
