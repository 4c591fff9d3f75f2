"""How a page reaches a model: the page-submitting interface (submitter) and its two implementations, the local
host (the model thread and the batch scheduler) and the vLLM pool; admission, metrics, the I/O worker threads."""
