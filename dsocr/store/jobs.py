"""Jobs in the database: submitted with their inputs in one transaction, worked on page by page by whichever
process claims a page (a lease it renews while it works; an expired lease means its worker died, and anyone may
take the page again), finished page by page, followed through stored events. Every function is one short
transaction; nothing here knows about HTTP or the model."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from dsocr.errors import PayloadTooLarge, Unavailable
from dsocr.store import schema as s
from dsocr.store.database import Database

FINAL = ("succeeded", "partial", "failed", "cancelled")
# Seconds a client is told to wait when the job queue is full.
QUEUE_FULL_RETRY_S = 30


class QueueFull(Unavailable):
    reason = "queue_full"


@dataclass
class NewDocument:
    file_name: str
    file_size: int
    is_pdf: bool
    page_numbers: list[int]
    content: bytes


@dataclass
class ClaimedPage:
    """A page a worker holds, with what it needs to read it."""

    id: int
    job_id: str
    document_id: str
    owner: str
    page_index: int
    page_number: int
    attempts: int
    mode: str
    prompt: str
    run_id: str
    is_pdf: bool
    page_count: int  # pages of its document that are read


def new_id() -> str:
    return uuid.uuid4().hex


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


class JobStore:
    def __init__(self, database: Database, max_queued_pages: int) -> None:
        self.db = database
        self.max_queued_pages = max_queued_pages

    # --- submitting --------------------------------------------------------------------------------------------

    def submit(self, owner: str, mode: str, prompt: str, callback_url: str | None, idempotency_key: str | None,
               new_documents: list[NewDocument]) -> tuple[str, bool]:
        """Commits a job with its inputs; returns its id and whether it is new (False: the idempotency key named a
        job of this owner already, which is returned as it is)."""
        try:
            return self._submit(owner, mode, prompt, callback_url, idempotency_key, new_documents)
        except IntegrityError:  # the same key, submitted at the same moment on another replica
            existing = self.job_for_key(owner, idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return existing, False

    def job_for_key(self, owner: str, key: str) -> str | None:
        """The id of `owner`'s job submitted with Idempotency-Key `key`, if there is one."""
        with self.db.read() as c:
            return c.execute(select(s.jobs.c.id).where(s.jobs.c.owner == owner, s.jobs.c.idempotency_key == key)).scalar()

    def _submit(self, owner: str, mode: str, prompt: str, callback_url: str | None, idempotency_key: str | None,
                new_documents: list[NewDocument]) -> tuple[str, bool]:
        total = sum(len(document.page_numbers) for document in new_documents)
        now = time.time()
        with self.db.write() as c:
            if idempotency_key:
                existing = c.execute(select(s.jobs.c.id).where(
                    s.jobs.c.owner == owner, s.jobs.c.idempotency_key == idempotency_key)).scalar()
                if existing:
                    return existing, False
            if total > self.max_queued_pages:  # could never be queued, however long the client waits
                raise PayloadTooLarge(f"The job has {total} pages; the queue holds at most {self.max_queued_pages} "
                                      "(DEEPSEEK_OCR_MAX_QUEUED_JOB_PAGES): split it into smaller jobs")
            queued = c.execute(select(func.count()).select_from(s.pages).where(s.pages.c.status == "queued")).scalar()
            if queued + total > self.max_queued_pages:
                raise QueueFull(
                    f"The job queue is full ({queued} pages queued, this job has {total}; the limit is "
                    f"{self.max_queued_pages}, DEEPSEEK_OCR_MAX_QUEUED_JOB_PAGES): retry later",
                    headers={"Retry-After": str(QUEUE_FULL_RETRY_S)},
                )
            job_id = new_id()
            c.execute(insert(s.jobs).values(
                id=job_id, owner=owner, status="queued", mode=mode, prompt=prompt, callback_url=callback_url,
                idempotency_key=idempotency_key or None, pages_total=total, pages_done=0, pages_failed=0,
                bytes=sum(document.file_size for document in new_documents), created=now,
            ))
            page_rows = []
            for position, document in enumerate(new_documents):
                document_id = new_id()
                c.execute(insert(s.documents).values(
                    id=document_id, job_id=job_id, position=position, file_name=document.file_name,
                    file_size=document.file_size, is_pdf=document.is_pdf,
                    page_numbers=json.dumps(document.page_numbers), status="queued", run_id=new_id(),
                    content=document.content,
                ))
                page_rows += [
                    {"job_id": job_id, "document_id": document_id, "owner": owner, "page_index": index,
                     "page_number": number, "status": "queued", "attempts": 0}
                    for index, number in enumerate(document.page_numbers)
                ]
            c.execute(insert(s.pages), page_rows)
            self.db.notify(c, "work")
        return job_id, True

    # --- reading -----------------------------------------------------------------------------------------------

    def view(self, job_id: str, owner: str) -> dict[str, Any] | None:
        """The job's status as GET /api/jobs/{id} answers it, or None (unknown, or another owner's)."""
        with self.db.read() as c:
            job = c.execute(select(s.jobs).where(s.jobs.c.id == job_id, s.jobs.c.owner == owner)).mappings().first()
            if job is None:
                return None
            docs = _documents(c, job_id)
            counts = _page_counts(c, job_id)
            position = self._queue_position(c, job_id) if job["status"] in ("queued", "running") else None
        return _job_json(job, docs, counts, position)

    def _queue_position(self, c: Connection, job_id: str) -> int | None:
        """Pages queued ahead of this job's first queued page (any owner's), or None when none of its pages waits."""
        first = c.execute(select(func.min(s.pages.c.id)).where(
            s.pages.c.job_id == job_id, s.pages.c.status == "queued")).scalar()
        if first is None:
            return None
        return c.execute(select(func.count()).select_from(s.pages).where(
            s.pages.c.status == "queued", s.pages.c.id < first)).scalar()

    def listing(self, owner: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        """The owner's jobs, newest first."""
        query = select(s.jobs).where(s.jobs.c.owner == owner)
        if status:
            query = query.where(s.jobs.c.status == status)
        with self.db.read() as c:
            rows = c.execute(query.order_by(s.jobs.c.created.desc()).limit(limit)).mappings().all()
        return [_job_summary(row) for row in rows]

    def result(self, job_id: str, owner: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The job's summary and its documents, each with its page results in order (None for a page that
        failed or never ran, with its error)."""
        with self.db.read() as c:
            job = c.execute(select(s.jobs).where(s.jobs.c.id == job_id, s.jobs.c.owner == owner)).mappings().first()
            if job is None:
                return None
            docs = _documents(c, job_id)
            rows = c.execute(
                select(s.pages.c.document_id, s.pages.c.page_index, s.pages.c.page_number, s.pages.c.status,
                       s.pages.c.result, s.pages.c.error)
                .where(s.pages.c.job_id == job_id).order_by(s.pages.c.document_id, s.pages.c.page_index)
            ).mappings().all()
        by_document: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_document.setdefault(row["document_id"], []).append({
                "pageIndex": row["page_index"], "page": row["page_number"], "status": row["status"],
                "result": json.loads(row["result"]) if row["result"] else None, "error": row["error"],
            })
        documents = [{**dict(doc), "pages": by_document.get(doc["id"], [])} for doc in docs]
        return {**_job_summary(job), "prompt": job["prompt"]}, documents

    def content(self, document_id: str) -> bytes | None:
        with self.db.read() as c:
            return c.execute(select(s.documents.c.content).where(s.documents.c.id == document_id)).scalar()

    def events(self, job_id: str, after: int, limit: int = 500) -> list[tuple[int, str, dict[str, Any]]]:
        with self.db.read() as c:
            rows = c.execute(
                select(s.job_events.c.id, s.job_events.c.name, s.job_events.c.data)
                .where(s.job_events.c.job_id == job_id, s.job_events.c.id > after)
                .order_by(s.job_events.c.id).limit(limit)
            ).all()
        return [(row.id, row.name, json.loads(row.data)) for row in rows]

    def queued_pages(self) -> int:
        with self.db.read() as c:
            return c.execute(select(func.count()).select_from(s.pages).where(s.pages.c.status == "queued")).scalar()

    # --- working -----------------------------------------------------------------------------------------------

    def claim(self, worker: str, limit: int, lease_s: float, max_attempts: int) -> list[ClaimedPage]:
        """Up to `limit` queued pages for `worker`, fairly between owners (the owner with the fewest pages
        running goes first, then the oldest page); pages whose lease ran out are queued again first, and one that
        has used up its attempts fails instead."""
        now = time.time()
        claimed: list[ClaimedPage] = []
        with self.db.write() as c:
            self._expire_leases(c, now, max_attempts)
            waiting = dict(c.execute(
                select(s.pages.c.owner, func.min(s.pages.c.id)).where(s.pages.c.status == "queued")
                .group_by(s.pages.c.owner)).all())
            if not waiting:
                return []
            running = dict(c.execute(
                select(s.pages.c.owner, func.count()).where(s.pages.c.status == "running")
                .group_by(s.pages.c.owner)).all())
            while len(claimed) < limit and waiting:
                owner = min(waiting, key=lambda o: (running.get(o, 0), waiting[o]))
                row = c.execute(
                    select(s.pages.c.id).where(s.pages.c.status == "queued", s.pages.c.owner == owner)
                    .order_by(s.pages.c.id).limit(1).with_for_update(skip_locked=True)
                ).first()
                if row is None:  # the owner's pages are taken (by another replica, meanwhile)
                    del waiting[owner]
                    continue
                c.execute(update(s.pages).where(s.pages.c.id == row.id).values(
                    status="running", worker=worker, lease_until=now + lease_s, attempts=s.pages.c.attempts + 1))
                running[owner] = running.get(owner, 0) + 1
                waiting[owner] = row.id + 1
                claimed.append(self._claimed(c, row.id))
            for job_id in {page.job_id for page in claimed}:
                c.execute(update(s.jobs).where(s.jobs.c.id == job_id, s.jobs.c.status == "queued")
                          .values(status="running", started=now))
            for document_id in {page.document_id for page in claimed}:
                c.execute(update(s.documents).where(s.documents.c.id == document_id, s.documents.c.status == "queued")
                          .values(status="running", started=now))
            for job_id in {page.job_id for page in claimed}:
                self.db.notify(c, job_id)
        return claimed

    def _claimed(self, c: Connection, page_id: int) -> ClaimedPage:
        row = c.execute(
            select(s.pages.c.id, s.pages.c.job_id, s.pages.c.document_id, s.pages.c.owner, s.pages.c.page_index,
                   s.pages.c.page_number, s.pages.c.attempts, s.jobs.c.mode, s.jobs.c.prompt, s.documents.c.run_id,
                   s.documents.c.is_pdf, s.documents.c.page_numbers)
            .join(s.jobs, s.jobs.c.id == s.pages.c.job_id).join(s.documents, s.documents.c.id == s.pages.c.document_id)
            .where(s.pages.c.id == page_id)
        ).mappings().one()
        fields = {key: row[key] for key in row.keys() if key != "page_numbers"}
        return ClaimedPage(**fields, page_count=len(json.loads(row["page_numbers"])))

    def _expire_leases(self, c: Connection, now: float, max_attempts: int) -> None:
        expired = c.execute(
            select(s.pages.c.id, s.pages.c.attempts, s.pages.c.worker)
            .where(s.pages.c.status == "running", s.pages.c.lease_until < now)
            .with_for_update(skip_locked=True)
        ).all()
        for row in expired:
            if row.attempts >= max_attempts:
                self._fail(c, row.id, f"the worker reading this page stopped ({row.attempts} attempt(s))", now)
            else:
                c.execute(update(s.pages).where(s.pages.c.id == row.id)
                          .values(status="queued", worker=None, lease_until=None))

    def renew(self, worker: str, page_ids: Iterable[int], lease_s: float) -> set[int]:
        """Extends the leases of the pages `worker` still holds; returns those (a page cancelled or taken over
        meanwhile is not among them: its work should stop)."""
        ids = list(page_ids)
        if not ids:
            return set()
        with self.db.write() as c:
            c.execute(update(s.pages).where(s.pages.c.id.in_(ids), s.pages.c.worker == worker,
                                            s.pages.c.status == "running")
                      .values(lease_until=time.time() + lease_s))
            held = c.execute(select(s.pages.c.id).where(s.pages.c.id.in_(ids), s.pages.c.worker == worker,
                                                        s.pages.c.status == "running")).scalars().all()
        return set(held)

    def release(self, worker: str) -> int:
        """Queues again every page `worker` held (its process is starting again: it holds nothing)."""
        with self.db.write() as c:
            released = c.execute(update(s.pages).where(s.pages.c.worker == worker, s.pages.c.status == "running")
                                 .values(status="queued", worker=None, lease_until=None)).rowcount
            if released:
                self.db.notify(c, "work")
        return released

    def finish_page(self, page: ClaimedPage, worker: str, result: dict[str, Any], event: dict[str, Any]) -> bool:
        """Keeps a page's result, if `worker` still holds the page (else it was cancelled or taken over, and
        nothing changes); settles its document and job when they are complete."""
        now = time.time()
        body = json.dumps(result, ensure_ascii=False)
        with self.db.write() as c:
            done = c.execute(update(s.pages).where(s.pages.c.id == page.id, s.pages.c.worker == worker,
                                                   s.pages.c.status == "running")
                             .values(status="done", result=body, finished=now, lease_until=None)).rowcount
            if not done:
                return False
            c.execute(update(s.jobs).where(s.jobs.c.id == page.job_id).values(
                pages_done=s.jobs.c.pages_done + 1, bytes=s.jobs.c.bytes + len(body)))
            _event(c, page.job_id, "page", event, now)
            self._settle(c, page.job_id, page.document_id, now)
            self.db.notify(c, page.job_id)
        return True

    def fail_page(self, page: ClaimedPage, worker: str, error: str, max_attempts: int, final: bool = False) -> bool:
        """A failed attempt: the page is queued again, or fails for good after `max_attempts` (or when `final`:
        an input that can never be read). Returns whether it failed for good."""
        now = time.time()
        with self.db.write() as c:
            attempts = c.execute(select(s.pages.c.attempts).where(
                s.pages.c.id == page.id, s.pages.c.worker == worker, s.pages.c.status == "running")).scalar()
            if attempts is None:
                return False
            if not final and attempts < max_attempts:
                c.execute(update(s.pages).where(s.pages.c.id == page.id)
                          .values(status="queued", worker=None, lease_until=None, error=error))
                self.db.notify(c, "work")
                return False
            self._fail(c, page.id, error, now)
            self.db.notify(c, page.job_id)
        return True

    def _fail(self, c: Connection, page_id: int, error: str, now: float) -> None:
        row = c.execute(select(s.pages.c.job_id, s.pages.c.document_id, s.pages.c.page_number)
                        .where(s.pages.c.id == page_id)).one()
        c.execute(update(s.pages).where(s.pages.c.id == page_id)
                  .values(status="failed", error=error, finished=now, lease_until=None))
        c.execute(update(s.jobs).where(s.jobs.c.id == row.job_id).values(pages_failed=s.jobs.c.pages_failed + 1))
        _event(c, row.job_id, "page_failed", {"documentId": row.document_id, "page": row.page_number,
                                              "error": error}, now)
        self._settle(c, row.job_id, row.document_id, now)

    def _settle(self, c: Connection, job_id: str, document_id: str, now: float) -> None:
        """Ends the document, then the job, once none of their pages waits or runs."""
        counts = _page_counts(c, job_id, document_id)
        if counts.get("queued", 0) or counts.get("running", 0):
            return
        status = _outcome(counts)
        ended = c.execute(update(s.documents).where(s.documents.c.id == document_id, s.documents.c.status.in_(
            ("queued", "running"))).values(status=status, finished=now)).rowcount
        if ended:
            _event(c, job_id, "document", {"documentId": document_id, "status": status}, now)
        job_counts = _page_counts(c, job_id)
        if job_counts.get("queued", 0) or job_counts.get("running", 0):
            return
        status, error = _outcome(job_counts), None
        if job_counts.get("failed", 0):
            first = c.execute(select(s.pages.c.error).where(s.pages.c.job_id == job_id, s.pages.c.status == "failed")
                              .order_by(s.pages.c.id).limit(1)).scalar()
            error = f"{job_counts['failed']} page(s) failed; the first: {first}"
        self._end_job(c, job_id, status, now, error)

    def _end_job(self, c: Connection, job_id: str, status: str, now: float, error: str | None = None) -> None:
        ended = c.execute(update(s.jobs).where(s.jobs.c.id == job_id, s.jobs.c.status.notin_(FINAL))
                          .values(status=status, finished=now, error=error)).rowcount
        if not ended:
            return
        job = c.execute(select(s.jobs).where(s.jobs.c.id == job_id)).mappings().one()
        summary = {"jobId": job_id, "status": status, "pagesDone": job["pages_done"],
                   "pagesFailed": job["pages_failed"], "links": job_links(job_id)}
        _event(c, job_id, "end", summary, now)
        if job["callback_url"]:
            c.execute(insert(s.webhooks).values(job_id=job_id, url=job["callback_url"], body=json.dumps(summary),
                                                attempts=0, next_at=now, created=now))
            self.db.notify(c, "webhook")

    # --- cancelling, removing ----------------------------------------------------------------------------------

    def cancel(self, job_id: str, owner: str) -> tuple[str, bool] | None:
        """Cancels the job unless it has ended; returns its status then, and whether this call cancelled it (None:
        no such job of this owner)."""
        now = time.time()
        with self.db.write() as c:
            status = c.execute(select(s.jobs.c.status).where(s.jobs.c.id == job_id, s.jobs.c.owner == owner)
                               .with_for_update()).scalar()
            if status is None:
                return None
            if status in FINAL:
                return status, False
            c.execute(update(s.pages).where(s.pages.c.job_id == job_id, s.pages.c.status.in_(("queued", "running")))
                      .values(status="cancelled", finished=now, lease_until=None))
            c.execute(update(s.documents).where(s.documents.c.job_id == job_id,
                                                s.documents.c.status.in_(("queued", "running")))
                      .values(status="cancelled", finished=now))
            self._end_job(c, job_id, "cancelled", now)
            self.db.notify(c, job_id)
        return "cancelled", True

    def remove(self, job_id: str, owner: str) -> list[str] | None:
        """Cancels and deletes the job with everything it holds; returns its documents' run ids (their folders are
        the caller's to remove), or None when there is no such job of this owner."""
        self.cancel(job_id, owner)
        with self.db.write() as c:
            exists = c.execute(select(s.jobs.c.id).where(s.jobs.c.id == job_id, s.jobs.c.owner == owner)).scalar()
            if exists is None:
                return None
            return self._delete(c, [job_id])

    def _delete(self, c: Connection, job_ids: list[str]) -> list[str]:
        run_ids = list(c.execute(select(s.documents.c.run_id).where(s.documents.c.job_id.in_(job_ids))).scalars())
        for table in (s.pages, s.job_events, s.webhooks, s.documents):
            c.execute(delete(table).where(table.c.job_id.in_(job_ids)))
        c.execute(delete(s.jobs).where(s.jobs.c.id.in_(job_ids)))
        for job_id in job_ids:
            self.db.notify(c, job_id)
        return run_ids

    def sweep(self, ttl_s: float, max_bytes: int) -> list[str]:
        """Removes finished jobs older than `ttl_s`, then the oldest finished ones while all jobs together hold more
        than `max_bytes`; never an unfinished job. Returns the removed documents' run ids."""
        now = time.time()
        with self.db.write() as c:
            doomed = list(c.execute(select(s.jobs.c.id).where(s.jobs.c.status.in_(FINAL),
                                                              s.jobs.c.finished < now - ttl_s)).scalars())
            kept = select(func.coalesce(func.sum(s.jobs.c.bytes), 0))
            total = c.execute(kept.where(s.jobs.c.id.notin_(doomed)) if doomed else kept).scalar()
            if total > max_bytes:
                for job_id, size in c.execute(
                    select(s.jobs.c.id, s.jobs.c.bytes).where(s.jobs.c.status.in_(FINAL))
                    .order_by(s.jobs.c.finished)
                ).all():
                    if total <= max_bytes:
                        break
                    if job_id not in doomed:
                        doomed.append(job_id)
                        total -= size
            return self._delete(c, doomed) if doomed else []

    # --- webhooks ----------------------------------------------------------------------------------------------

    def due_webhook(self, lease_s: float) -> dict[str, Any] | None:
        """One delivery that is due, leased to the caller for `lease_s`."""
        now = time.time()
        with self.db.write() as c:
            row = c.execute(
                select(s.webhooks).where(s.webhooks.c.delivered.is_(None), s.webhooks.c.given_up.is_(None),
                                         s.webhooks.c.next_at <= now,
                                         or_(s.webhooks.c.lease_until.is_(None), s.webhooks.c.lease_until < now))
                .order_by(s.webhooks.c.next_at).limit(1).with_for_update(skip_locked=True)
            ).mappings().first()
            if row is None:
                return None
            c.execute(update(s.webhooks).where(s.webhooks.c.id == row["id"])
                      .values(lease_until=now + lease_s, attempts=s.webhooks.c.attempts + 1))
            return {**dict(row), "attempts": row["attempts"] + 1}

    def webhook_delivered(self, delivery_id: int) -> None:
        with self.db.write() as c:
            c.execute(update(s.webhooks).where(s.webhooks.c.id == delivery_id)
                      .values(delivered=time.time(), lease_until=None, last_error=None))

    def webhook_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        """A failed delivery: tried again at `retry_at`, or given up for good (None)."""
        now = time.time()
        values: dict[str, Any] = {"last_error": error[:500], "lease_until": None}
        values.update({"next_at": retry_at} if retry_at is not None else {"given_up": now})
        with self.db.write() as c:
            c.execute(update(s.webhooks).where(s.webhooks.c.id == delivery_id).values(**values))



def job_links(job_id: str, root_path: str = "") -> dict[str, str]:
    base = f"{root_path}/api/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "result": f"{base}/result", "cancel": f"{base}/cancel"}


def _documents(c: Connection, job_id: str) -> list[Any]:
    """The job's documents in order, every column but their uploads."""
    columns = [column for column in s.documents.c if column.name != "content"]
    return c.execute(select(*columns).where(s.documents.c.job_id == job_id)
                     .order_by(s.documents.c.position)).mappings().all()


def _event(c: Connection, job_id: str, name: str, data: dict[str, Any], now: float) -> None:
    c.execute(insert(s.job_events).values(job_id=job_id, name=name, data=json.dumps(data, ensure_ascii=False),
                                          created=now))


def _page_counts(c: Connection, job_id: str, document_id: str | None = None) -> dict[str, int]:
    query = select(s.pages.c.status, func.count()).where(s.pages.c.job_id == job_id)
    if document_id is not None:
        query = query.where(s.pages.c.document_id == document_id)
    return dict(c.execute(query.group_by(s.pages.c.status)).all())


def _outcome(counts: dict[str, int]) -> str:
    done, failed, cancelled = counts.get("done", 0), counts.get("failed", 0), counts.get("cancelled", 0)
    if cancelled and not failed and not done:
        return "cancelled"
    if failed or cancelled:
        return "partial" if done else "failed"
    return "succeeded"


def _job_summary(job: Any) -> dict[str, Any]:
    return {
        "jobId": job["id"], "status": job["status"], "createdAt": iso(job["created"]),
        "startedAt": iso(job["started"]), "finishedAt": iso(job["finished"]), "mode": job["mode"],
        "pagesTotal": job["pages_total"], "pagesDone": job["pages_done"], "pagesFailed": job["pages_failed"],
        "error": job["error"], "links": job_links(job["id"]),
    }


def _job_json(job: Any, docs: list[Any], counts: dict[str, int], position: int | None) -> dict[str, Any]:
    return {
        **_job_summary(job),
        "queuePosition": position,
        "documents": [
            {"documentId": doc["id"], "fileName": doc["file_name"], "fileSize": doc["file_size"],
             "isPdf": bool(doc["is_pdf"]), "pages": len(json.loads(doc["page_numbers"])), "status": doc["status"],
             "startedAt": iso(doc["started"]), "finishedAt": iso(doc["finished"])}
            for doc in docs
        ],
    }
