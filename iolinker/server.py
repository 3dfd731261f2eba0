"""The RSGI front: what `manage.py serve` runs in granian, in front of the WSGI app.

Granian's WSGI interface calls the application before the request body has
arrived, and ``wsgi.input.read()`` then holds a request thread for as long as
the client takes to send it; granian has no body read timeout (its issue #728).
32 clients that send headers and then stall froze a web process. Here each
request's body is read in granian's event loop, where waiting costs no thread,
within ``IOLINKER_BODY_READ_TIMEOUT`` seconds (408 after) and up to the body limit;
only a request whose body has fully arrived takes one of the ``WEB_THREADS``
threads, which run the WSGI application (``iolinker.wsgi.application``: the
trigger fast path, then Django) exactly as granian's WSGI interface did.

This module owns what a WSGI server owns: the environ (built and checked in
iolinker/rsgi_environ.py), refusing a body cut short or malformed (400), and
sending the application's answer (lists and Django responses in one piece;
streaming responses chunk by chunk). Answers are the WSGI application's, byte for
byte, except that `Set-Cookie` values lose the space Django puts before them.
"""

import asyncio
import collections
import contextlib
import functools
import io
import itertools
import logging
import queue
import threading

from django.conf import settings

from iolinker import errors, responses
from iolinker.rsgi_environ import Refused, environ_of
from iolinker.wsgi import application as wsgi_application  # sets Django up

logger = logging.getLogger("iolinker.server")

try:
    from granian.rsgi import ProtocolClosed, ProtocolError

    _BODY_ERRORS: tuple[type[BaseException], ...] = (ProtocolClosed, ProtocolError)
except ImportError:  # granian is the server; without it (tests of parts) nothing raises these
    _BODY_ERRORS = ()

# Set in the environ when a body over the limit is left unread (see _read_body).
_UNREAD = "iolinker.body_unread"


@functools.cache
def _status_code(status: str) -> int:
    return int(status.split(" ", 1)[0])


def _expire(task: asyncio.Task, expired: list) -> None:
    expired.append(True)
    task.cancel()


def _resolve(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


def _strip_cookies(headers: list) -> list:
    """Django's WSGI handler appends each cookie last, as ``cookie.output(header="")``:
    a value with a leading space, a malformed field in HTTP/2 (RFC 9113 §8.2.1;
    strict clients refuse the answer). Only answers that set a cookie pay this."""
    return [
        (name, value.strip()) if name == "Set-Cookie" else (name, value) for name, value in headers
    ]


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the WSGI write() callable is not supported")


class RsgiFront:
    """Read the body in the event loop, then run ``app`` (WSGI) in a thread pool."""

    def __init__(self, app):
        self.app = app
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.finished: collections.deque = collections.deque()
        self.wake_pending = False

    def __rsgi_init__(self, loop) -> None:
        self.loop = loop
        # The request threads live as long as the process: handing a request over
        # is one queue put (no executor bookkeeping), and each thread answers its
        # request itself (granian's response calls are thread-safe), so the
        # caller's answer never waits for the event loop to get the GIL back.
        for n in range(settings.WEB_THREADS):  # `serve --threads`
            thread = threading.Thread(target=self._serve, name=f"request-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.timeout = settings.IOLINKER_BODY_READ_TIMEOUT
        self.send_timeout = settings.IOLINKER_SEND_TIMEOUT
        self.api_limit = settings.IOLINKER_MAX_BODY_BYTES
        self.upload_limit = settings.IOLINKER_MAX_UPLOAD_BYTES

    def __rsgi_del__(self, loop) -> None:
        for _ in self.threads:
            self.requests.put(None)

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":  # websockets: `serve` turns them off; refuse any anyway
            proto.close(403)
            return
        try:
            environ = environ_of(scope)
            body = await self._read_body(environ, proto, scope.http_version)
        except Refused as refused:
            self._refuse(proto, refused.spec, refused.message, refused.headers)
            return
        environ["wsgi.input"] = io.BytesIO(body)
        done = self.loop.create_future()
        self.requests.put((environ, proto, done))
        # Returning sooner would make granian answer 500 for a request not yet answered.
        await done

    def _serve(self) -> None:
        """A request thread: run each request handed over, answer it, wake its task."""
        while (work := self.requests.get()) is not None:
            environ, proto, done = work
            try:
                answer = self._call(environ, proto)
                if answer is not None:
                    proto.response_bytes(*answer)
            except Exception:
                logger.exception("WSGI application failed on %s", environ["PATH_INFO"])
                # Fails where an answer already went out; the thread must live on.
                with contextlib.suppress(Exception):
                    self._refuse(proto, errors.INTERNAL)
            finally:
                self._finish(done)

    def _finish(self, done: asyncio.Future) -> None:
        """Wake a finished request's task. The answer has gone out already, so
        under load one wake-up of the event loop ends every task finished since
        the last one (each wake-up costs a pipe write and the GIL)."""
        self.finished.append(done)
        if not self.wake_pending:
            self.wake_pending = True
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self.wake_pending = False  # before draining: a later append schedules another wake
        finished = self.finished
        while finished:
            _resolve(finished.popleft())

    async def _read_body(self, environ: dict, proto, http_version: str) -> bytes:
        """The whole body, read within the deadline and up to the limit.

        Over the limit under /v1/, the application gets what it needs to answer
        413 in its own order of checks (a declared length and no body, or the
        first limit + 1 bytes): the same answer as before, never a thread held
        by a read. The rest of that body is never read, so the answer closes
        the connection (``_UNREAD``): kept open, the unread bytes would be
        drained or parsed as the next request.
        """
        is_api = responses.is_api_path(environ["PATH_INFO"])
        limit = self.api_limit if is_api else self.upload_limit
        length = environ.get("CONTENT_LENGTH")
        if length is not None:
            if not length.isdigit():
                return b""  # the application answers 400 (granian refuses most itself)
            declared = int(length)
            if declared == 0:
                return b""
            if declared > limit:
                if is_api:
                    environ[_UNREAD] = True
                    return b""
                raise Refused(errors.PAYLOAD_TOO_LARGE)
            try:
                body = await self._in_time(proto())
            except _BODY_ERRORS:
                body = b""
            if len(body) != declared:
                raise Refused(errors.BAD_REQUEST, "Request body is shorter than its Content-Length")
            return body
        if "HTTP_TRANSFER_ENCODING" not in environ and http_version != "2":
            return b""  # HTTP/1 without Content-Length or chunked encoding: no body
        body = await self._in_time(self._read_stream(proto, limit))
        if len(body) > limit:
            if not is_api:
                raise Refused(errors.PAYLOAD_TOO_LARGE)
            environ[_UNREAD] = True
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    async def _in_time(self, reading):
        """Await ``reading`` within the body deadline, else 408.

        One timer handle that cancels the task: a third of what asyncio.timeout()
        costs (measured 16 µs a request), on the path of every trigger.
        """
        task = asyncio.current_task()
        expired: list[bool] = []
        timer = self.loop.call_at(self.loop.time() + self.timeout, _expire, task, expired)
        try:
            return await reading
        except asyncio.CancelledError:
            if not expired:
                raise
            task.uncancel()
            raise Refused(errors.REQUEST_TIMEOUT) from None
        finally:
            timer.cancel()

    async def _read_stream(self, proto, limit: int) -> bytes:
        """A body of unknown length (chunked, HTTP/2), up to limit + 1 bytes.

        Granian's body iterator yields b"" once at the end; a broken body (cut
        before its last chunk, a malformed chunk size) yields an extra b"" in its
        place (so do trailer fields, which no caller sends us: refused alike).
        """
        chunks, size, empty = [], 0, 0
        try:
            async for chunk in proto:
                if not chunk:
                    empty += 1
                    if empty > 1:
                        break
                    continue
                if empty:  # data after an empty chunk: the body is not what was sent
                    empty = 2
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return b"".join(chunks)[: limit + 1]
        except _BODY_ERRORS:
            empty = 2
        if empty != 1:
            raise Refused(
                errors.BAD_REQUEST, "Request body is incomplete (a chunked body cut or malformed)"
            )
        return b"".join(chunks)

    def _call(self, environ: dict, proto):
        """In a request thread: run the application; its whole answer, or None
        when it was streamed from here."""
        started = []

        def start_response(status, headers, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            if headers and headers[-1][0] == "Set-Cookie":
                headers = _strip_cookies(headers)
            if unread:
                headers = [*headers, ("Connection", "close")]
            started[:] = (status, headers)
            return _no_write

        unread = environ.get(_UNREAD, False)

        result = self.app(environ, start_response)
        try:
            if isinstance(result, (list, tuple)) or not getattr(result, "streaming", True):
                body = b"".join(result)
                status, headers = started
                return _status_code(status), headers, body
            self._stream(result, started, proto)
            return None
        finally:
            if hasattr(result, "close"):
                result.close()  # in this thread: Django's request_finished closes its connections

    def _stream(self, result, started, proto) -> None:
        """Send a streaming answer (a generator, Django's StreamingHttpResponse)."""
        chunks = iter(result)
        first = next(chunks, None)  # start_response may wait for the first chunk
        status, headers = started

        async def start():
            return proto.response_stream(_status_code(status), headers)

        async def send(stream, data):
            await stream.send_bytes(data)

        try:
            stream = self._in_loop(start())
            for chunk in itertools.chain([first] if first is not None else [], chunks):
                if chunk:  # one chunk in flight at a time, sent by the event loop
                    self._in_loop(send(stream, chunk))
        except _BODY_ERRORS:
            pass  # the client went away: stop producing
        except TimeoutError:
            # A client that does not read: the thread is free again (the
            # connection is left to granian's event loop, where it holds no thread).
            logger.warning(
                "A client took no chunk of a streamed answer for %s s: stopped sending",
                self.send_timeout,
            )

    def _in_loop(self, coroutine):
        """Run ``coroutine`` in the event loop and wait for it, at most the send
        timeout (then it is cancelled and TimeoutError raised)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout=self.send_timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _refuse(
        self, proto, spec: errors.ErrorSpec, message: str | None = None, extra: tuple = ()
    ) -> None:
        body = responses.error_body(spec, message)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *extra,
            *responses.SECURITY_HEADERS,
            # The rest of the body may still be on its way: this connection is done.
            ("Connection", "close"),
        ]
        proto.response_bytes(spec.status, headers, body)


application = RsgiFront(wsgi_application)
