"""Run an async engine on its own event-loop thread for synchronous callers.

The Triton ``llm`` model's ``execute`` runs in the stub's thread, not in an
event loop. :class:`BackgroundEngine` owns a loop thread, creates the engine
there, and lets any thread submit a request (``run_coroutine_threadsafe``),
receive its deltas through callbacks or a blocking iterator, and cancel it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextlib import aclosing
from typing import Any

from video_pipeline.engines.types import AsyncEngine, GenerationDelta, GenerationRequest
from video_pipeline.errors import EngineUnavailable, PipelineError

logger = logging.getLogger(__name__)

OnDelta = Callable[[GenerationDelta], None]
OnDone = Callable[[PipelineError | None], None]

#: How often a request's ``is_cancelled`` callable is polled, in seconds.
CANCEL_POLL_S = 0.1


class RequestHandle:
    """A submitted request: cancel it, or wait until its ``on_done`` has run."""

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self._loop = loop
        self._finished = threading.Event()
        # Both touched only on the loop thread.
        self._task: asyncio.Task[None] | None = None
        self._cancel_requested = False

    def cancel(self) -> None:
        """Stop generating; ``on_done(None)`` follows once vLLM has aborted the request."""
        if not self._finished.is_set() and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_in_loop)

    def done(self) -> bool:
        """True once ``on_done`` has returned."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done or ``timeout``; True if done."""
        return self._finished.wait(timeout)

    def _cancel_in_loop(self) -> None:
        # Before the request's task has started, the flag makes it end at once;
        # cancelling a task that never ran would skip on_done.
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()


class BackgroundEngine:
    """An :class:`AsyncEngine` on a private event-loop thread, usable from any thread.

    ``factory`` creates the engine inside the loop (a coroutine function or a
    plain function); its exceptions propagate from the constructor unchanged.
    """

    def __init__(
        self,
        factory: Callable[[], Awaitable[AsyncEngine]] | Callable[[], AsyncEngine],
        *,
        name: str = "engine-loop",
        start_timeout: float | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        # Running requests by id, so another caller can stop one (see cancel_by_id).
        self._by_id: dict[str, set[RequestHandle]] = {}
        self._by_id_lock = threading.Lock()
        self._closing = False
        self._thread.start()
        try:
            self._engine: AsyncEngine = self._call(_create(factory), timeout=start_timeout)
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def vllm(
        cls, engine_args: Mapping[str, Any], *, chat_template: str | None = None, **kwargs: Any
    ) -> BackgroundEngine:
        """A background :class:`~video_pipeline.engines.vllm_engine.VllmEngine` from vLLM engine args."""
        from video_pipeline.engines.vllm_engine import VllmEngine

        return cls(lambda: VllmEngine(engine_args, chat_template=chat_template), **kwargs)

    @property
    def engine(self) -> AsyncEngine:
        """The engine itself; touch it only from coroutines run on this loop."""
        return self._engine

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The engine's event loop."""
        return self._loop

    def submit(
        self,
        request: GenerationRequest,
        on_delta: OnDelta,
        on_done: OnDone,
        *,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> RequestHandle:
        """Start ``request``; callbacks run on the loop thread, in order.

        ``on_delta`` gets each delta; ``on_done`` is called exactly once at the
        end: with None on success or cancellation, else with the typed error.
        ``is_cancelled`` (e.g. Triton's ``request.is_cancelled``) is polled every
        :data:`CANCEL_POLL_S` seconds; True aborts the request.
        """
        if self._closing:
            raise EngineUnavailable("engine is shutting down")
        handle = RequestHandle(request.request_id, self._loop)
        with self._by_id_lock:
            self._by_id.setdefault(request.request_id, set()).add(handle)
        asyncio.run_coroutine_threadsafe(
            self._serve(request, on_delta, on_done, is_cancelled, handle), self._loop
        )
        return handle

    def stream(
        self, request: GenerationRequest, *, timeout: float | None = None
    ) -> Generator[GenerationDelta, None, None]:
        """Deltas of ``request`` as a blocking iterator; closing it early cancels the request.

        Raises the request's typed error, or :class:`TimeoutError` when no
        delta arrives within ``timeout`` seconds.
        """
        items: queue.Queue[GenerationDelta | _Done] = queue.Queue()
        handle = self.submit(request, items.put, lambda error: items.put(_Done(error)))
        try:
            while True:
                try:
                    item = items.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"no output for {request.request_id} within {timeout} s") from None
                if isinstance(item, _Done):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            if not handle.done():
                handle.cancel()
                handle.wait(timeout=30)

    def cancel_by_id(self, request_id: str) -> int:
        """Cancels every running request submitted with ``request_id``; returns how many.

        For clients that cannot cancel their own stream (a step inside a Triton ensemble
        never sees the client's cancel; tritonserver 2.51 also drops some stream cancels).
        """
        with self._by_id_lock:
            handles = list(self._by_id.get(request_id, ()))
        for handle in handles:
            handle.cancel()
        return len(handles)

    def abort(self, request_id: str, timeout: float | None = 30) -> None:
        """Abort a request by id (e.g. one submitted by another caller)."""
        self._call(self._engine.abort(request_id), timeout=timeout)

    def check_health(self, timeout: float | None = 10) -> None:
        """Raise :class:`EngineUnavailable` unless the engine answers healthy."""
        if self._closing:
            raise EngineUnavailable("engine is shutting down")
        try:
            self._call(self._engine.check_health(), timeout=timeout)
        except PipelineError:
            raise
        except Exception as exc:
            raise EngineUnavailable(f"health check failed: {exc}") from exc

    def shutdown(self, timeout: float | None = 30) -> None:
        """Fail in-flight requests with :class:`EngineUnavailable`, stop the engine and the loop."""
        if self._closing:
            return
        self._closing = True
        try:
            self._call(self._cancel_all(), timeout=timeout)
            self._call(_shutdown(self._engine), timeout=timeout)
            # Let tasks the engine cancelled on shutdown (its output handler) finish cleanly.
            self._call(_cancel_others(), timeout=timeout)
        finally:
            self._stop_loop()

    # --- loop side ---------------------------------------------------------

    async def _serve(
        self,
        request: GenerationRequest,
        on_delta: OnDelta,
        on_done: OnDone,
        is_cancelled: Callable[[], bool] | None,
        handle: RequestHandle,
    ) -> None:
        task = asyncio.current_task()
        if task is None:  # cannot happen: run_coroutine_threadsafe always wraps the coroutine in a task
            raise RuntimeError("_serve must run as a task")
        self._tasks.add(task)
        handle._task = task
        died = asyncio.Event()
        is_dead = getattr(self._engine, "is_dead", None)
        watcher = (
            asyncio.create_task(_watch(is_cancelled, task, is_dead, died)) if is_cancelled or is_dead else None
        )
        error: PipelineError | None = None
        try:
            if self._closing:
                raise EngineUnavailable("engine is shutting down")
            if handle._cancel_requested:
                raise asyncio.CancelledError
            async with aclosing(self._engine.generate(request)) as deltas:
                async for delta in deltas:
                    try:
                        on_delta(delta)
                    except Exception as exc:
                        # The receiver is gone (e.g. the client disconnected): stop generating.
                        logger.warning("request %s: on_delta failed, aborting: %s", request.request_id, exc)
                        error = PipelineError(f"delivering output failed: {exc}")
                        break
        except asyncio.CancelledError:
            # Closing the engine's stream (above) aborted the request in vLLM.
            if self._closing:
                error = EngineUnavailable("engine is shutting down")
            elif died.is_set():
                error = EngineUnavailable("the inference engine died")
        except PipelineError as exc:
            error = exc
        except Exception as exc:
            logger.exception("request %s failed", request.request_id)
            error = PipelineError(f"generation failed: {type(exc).__name__}: {exc}")
        finally:
            if watcher is not None:
                watcher.cancel()
            self._tasks.discard(task)
            with self._by_id_lock:
                same = self._by_id.get(request.request_id)
                if same is not None:
                    same.discard(handle)
                    if not same:
                        del self._by_id[request.request_id]
            try:
                on_done(error)
            except Exception:
                logger.exception("request %s: on_done failed", request.request_id)
            handle._finished.set()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    def _call(self, coro: Awaitable[Any], timeout: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self._loop).result(timeout)

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


class _Done:
    def __init__(self, error: PipelineError | None) -> None:
        self.error = error


async def _create(factory: Callable[[], Any]) -> AsyncEngine:
    engine = factory()
    if asyncio.iscoroutine(engine) or isinstance(engine, asyncio.Future):
        engine = await engine
    return engine


async def _shutdown(engine: AsyncEngine) -> None:
    engine.shutdown()


async def _cancel_others() -> None:
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _watch(
    is_cancelled: Callable[[], bool] | None,
    task: asyncio.Task[None],
    is_dead: Callable[[], bool] | None = None,
    died: asyncio.Event | None = None,
) -> None:
    """Cancels ``task`` when its client cancels, or when the engine dies under it."""
    while True:
        await asyncio.sleep(CANCEL_POLL_S)
        if is_dead is not None and died is not None:
            try:
                dead = is_dead()
            except Exception:
                dead = True
            if dead:
                died.set()
                task.cancel()
                return
        if is_cancelled is None:
            continue
        try:
            cancelled = is_cancelled()
        except Exception:
            logger.exception("is_cancelled failed; treating the request as cancelled")
            cancelled = True
        if cancelled:
            task.cancel()
            return
