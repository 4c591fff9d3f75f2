"""Loading a checkpoint and running it: transformers' native classes, or the original remote code."""
