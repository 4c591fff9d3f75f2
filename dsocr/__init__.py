"""The service's code, one folder per stage of a request: `api` (the HTTP edge) → `pipeline` (checks, pages,
cleaning, artifacts, runs, history) → `serving` (admission, the scheduler, the model host, metrics) → `engines`
(loading a checkpoint and running it). `catalogue` is what the service knows of DeepSeek-OCR itself."""

__version__ = "0.12.0"
