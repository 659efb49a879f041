"""A few threads serve the state API; a request that waits too long gets its own.

Hand-written because neither standard class does both jobs:

* ``socketserver.ThreadingMixIn`` starts one thread per connection. When an RL
  rollout worker starts many agents at once, as many request threads (and the
  accept loop, which waits in ``Thread.start`` for each new thread to run)
  contend for the GIL on a 2-vCPU node: with 4 serving threads 128 agents at
  once started in 0.86x (p99) of the time (``scripts/bench_scale.py``); a pool
  of 32 threads did not help (docs/benchmarks.md, "Start path, fifth round").
* ``concurrent.futures.ThreadPoolExecutor`` bounds the threads, but a request
  queued behind workers busy with slow ones (a stop whose leftover processes
  take seconds to die, an idle keep-alive connection) waits for them.

So :class:`Workers` runs ``workers`` threads that take requests in arrival
order, and :meth:`Workers.rescue` (called by the accept loop at least every
poll interval) hands every request that has waited ``overflow_s`` to a thread
of its own: a slow request never delays another by more than that.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any


class Workers:
    def __init__(self, serve: Callable[[Any], None], workers: int = 4, overflow_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, name: str = "state-api"):
        self._serve = serve
        self._overflow_s = overflow_s
        self._clock = clock
        self._queue: collections.deque[tuple[float, Any]] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self.rescued = 0            # requests served by a thread of their own
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, item: Any) -> None:
        with self._cv:
            self._queue.append((self._clock(), item))
            self._cv.notify()

    def _next(self) -> Any:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            return self._queue.popleft()[1] if self._queue else None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            self._serve(item)

    def rescue(self) -> int:
        """Serve each request queued for overflow_s or longer in a new thread;
        returns how many were."""
        now = self._clock()
        late = []
        with self._cv:
            while self._queue and now - self._queue[0][0] >= self._overflow_s:
                late.append(self._queue.popleft()[1])
        for item in late:
            threading.Thread(target=self._serve, args=(item,), name="state-api-rescue", daemon=True).start()
        self.rescued += len(late)
        return len(late)

    def close(self) -> list[Any]:
        """Stop taking requests; returns those never started (the caller closes them)."""
        with self._cv:
            self._closed = True
            left = [item for _t, item in self._queue]
            self._queue.clear()
            self._cv.notify_all()
        return left
