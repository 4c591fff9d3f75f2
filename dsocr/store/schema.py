"""The tables of the service's database: jobs with their documents and pages, the events clients follow, the
webhook outbox, the history and the progress tasks. Times are Unix seconds (float); JSON is kept as text."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Ids are 32 hex characters (uuid4): not guessable, the same shape as run and history ids.
ID = String(32)
# An API key's fingerprint ("" without keys): every row a client can see belongs to one.
OWNER = String(64)
# Autoincrementing keys: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite.
SERIAL = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner", OWNER, nullable=False),
    # queued → running → succeeded | partial | failed; cancelled at any point before the end
    Column("status", String(16), nullable=False),
    Column("mode", String(32), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("callback_url", Text),
    Column("idempotency_key", String(255)),
    Column("pages_total", Integer, nullable=False),
    Column("pages_done", Integer, nullable=False, default=0),
    Column("pages_failed", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("bytes", BigInteger, nullable=False, default=0),  # inputs and results: the disk cap counts them
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("finished", Float),
    UniqueConstraint("owner", "idempotency_key", name="jobs_idempotency"),
)
Index("jobs_by_owner", jobs.c.owner, jobs.c.created)
Index("jobs_by_end", jobs.c.finished)

documents = Table(
    "documents",
    metadata,
    Column("id", ID, primary_key=True),
    Column("job_id", ID, nullable=False),
    Column("position", Integer, nullable=False),  # its place among the job's files
    Column("file_name", Text, nullable=False),
    Column("file_size", BigInteger, nullable=False),
    Column("is_pdf", Boolean, nullable=False),
    Column("page_numbers", Text, nullable=False),  # JSON list: the PDF pages to read ([1] for an image)
    Column("status", String(16), nullable=False),
    Column("run_id", ID, nullable=False),  # the folder its figures and annotated pages go to
    Column("content", LargeBinary, nullable=False),  # the upload itself: a job outlives the request
    Column("started", Float),
    Column("finished", Float),
)
Index("documents_by_job", documents.c.job_id, documents.c.position)

pages = Table(
    "pages",
    metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),  # also the queue's order
    Column("job_id", ID, nullable=False),
    Column("document_id", ID, nullable=False),
    Column("owner", OWNER, nullable=False),
    Column("page_index", Integer, nullable=False),  # position in the document's answer
    Column("page_number", Integer, nullable=False),  # the PDF page (1 for an image)
    # queued → running → done | failed; cancelled
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", String(128)),
    Column("lease_until", Float),
    Column("result", Text),  # the page's JSON as /api/ocr answers it
    Column("error", Text),
    Column("finished", Float),
)
Index("pages_queue", pages.c.status, pages.c.owner, pages.c.id)
Index("pages_by_document", pages.c.document_id, pages.c.page_index)
Index("pages_by_job", pages.c.job_id, pages.c.status)

job_events = Table(
    "job_events",
    metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),  # the SSE event id (Last-Event-ID)
    Column("job_id", ID, nullable=False),
    Column("name", String(32), nullable=False),
    Column("data", Text, nullable=False),
    Column("created", Float, nullable=False),
)
Index("job_events_by_job", job_events.c.job_id, job_events.c.id)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),
    Column("job_id", ID, nullable=False),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("delivered", Float),
    Column("given_up", Float),
    Column("last_error", Text),
    Column("created", Float, nullable=False),
)
Index("webhooks_due", webhooks.c.delivered, webhooks.c.next_at)

history = Table(
    "history",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner", OWNER, nullable=False),
    Column("created", Float, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("file_name", Text, nullable=False),
    Column("file_size", BigInteger, nullable=False),
    Column("mode", String(32), nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("is_pdf", Boolean, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("result", Text, nullable=False),
)
Index("history_by_age", history.c.created)
Index("history_by_owner", history.c.owner, history.c.created)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", OWNER, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("current", Integer, nullable=False, default=0),
    Column("total", Integer, nullable=False, default=0),
    Column("message", Text, nullable=False),
    Column("followed", Float),  # last time a follower or an upload held it: such a task is never evicted
    Column("updated", Float, nullable=False),
)
Index("tasks_by_owner", tasks.c.owner, tasks.c.updated)

task_events = Table(
    "task_events",
    metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),
    Column("task_id", String(64), nullable=False),
    Column("data", Text, nullable=False),  # the task's state after the change
)
Index("task_events_by_task", task_events.c.task_id, task_events.c.id)
