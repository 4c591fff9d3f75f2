"""The service's code, one folder per layer, each importing only those below it (tests/test_layers.py):
`api` (the HTTP edge: routes, middleware) → `pipeline` (checks, PDF workers, pages, cleaning, artifacts, runs,
history) → `serving` (admission, the one page-submitting interface: the local host or the vLLM pool) → `engines`
(loading a checkpoint and running it, or talking to one vLLM server). Shared by all: `catalogue` (what the service
knows of DeepSeek-OCR itself), `errors`, `logs`, and the top-level settings, schemas and engine interface."""

__version__ = "0.12.0"
