"""The command-line client: `python -m dsocr convert` turns files and folders into markdown through the jobs API,
against a server or an embedded one. It imports nothing of the service but `app` (by name, through uvicorn)."""
