"""HEAD answered as GET without a body: load balancers and uptime checks probe with HEAD, and FastAPI's routes
answer only the methods they name (a GET route would say 405 to HEAD)."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """A HEAD request goes to the app as a GET; the client gets its status and headers (Content-Length included,
    as GET would say) and no body. A streamed answer (server-sent events) is stopped once its head is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        streaming = asyncio.Event()  # the head is sent and the body would go on: nothing more to wait for
        answered = False

        async def head_only(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not answered:
                answered = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    streaming.set()

        app = asyncio.ensure_future(self.app({**scope, "method": "GET"}, receive, head_only))
        stream_started = asyncio.ensure_future(streaming.wait())
        try:
            await asyncio.wait({app, stream_started}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the request was cancelled
            app.cancel()
            raise
        finally:
            stream_started.cancel()
        if app.done():
            app.result()  # the app's own errors stay the app's
            return
        app.cancel()  # a stream's body nobody will read
        await asyncio.gather(app, return_exceptions=True)
