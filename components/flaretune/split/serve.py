"""The server's side of a split-learning round: several sites served in one middle step (no FLARE).

Each site's requests come in on their own thread (FLARE runs every aux request handler on a pool
thread). :class:`StepBatcher` gathers one forward request from every site still training, runs them
as one :meth:`MiddleServer.forward <flaretune.split.steps.MiddleServer.forward>` (FL-LLaMA's client
batching, arXiv:2505.15683), then gathers those sites' gradients for one backward and update.

A site that leaves (its task ended or failed: :meth:`leave`) is no longer waited for; its pending
work is dropped (its gradient counts zero). A site that goes silent is dropped once it keeps a group
waiting ``site_timeout`` seconds; its later requests are refused with :class:`SiteDropped`. Either
way the other sites carry on.
"""

import threading
import time
from typing import Dict, Iterable, Optional, Set

from flaretune.errors import FlaretuneError
from flaretune.split.steps import MiddleServer


class SiteDropped(FlaretuneError):
    """A request from a site that left the round or was dropped for keeping the others waiting."""


class StepBatcher:
    def __init__(self, server: MiddleServer, site_timeout: float = 60.0):
        self.server = server
        self.site_timeout = float(site_timeout)
        self._cv = threading.Condition()
        self.active: Set[str] = set()
        self.dropped: Set[str] = set()
        self._forward: Dict[str, tuple] = {}  # site -> (hidden, mask), waiting for a group
        self._first_forward = 0.0
        self._group: Optional[list] = None  # sites of the group whose gradients are awaited
        self._group_done = 0.0
        self._backward: Dict[str, object] = {}
        self._results: Dict[str, object] = {}
        self.groups = 0  # middle steps run
        self.group_sizes: list = []
        self._last_seen: Dict[str, float] = {}

    def begin(self, sites: Iterable[str]) -> None:
        with self._cv:
            self.active, self.dropped = set(sites), set()
            self._last_seen = {site: time.monotonic() for site in self.active}
            self._forward, self._backward, self._results, self._group = {}, {}, {}, None
            self._cv.notify_all()

    def leave(self, site: str) -> None:
        """The site trains no more this round (done or failed): stop waiting for it."""
        with self._cv:
            self._last_seen[site] = time.monotonic()
            self.active.discard(site)
            self._forward.pop(site, None)
            self._cv.notify_all()

    def silent(self, site: str) -> bool:
        """No word from the site (request or leave) for ``site_timeout`` seconds: it is gone."""
        with self._cv:
            return time.monotonic() - self._last_seen.get(site, 0.0) > self.site_timeout

    # -- requests (one thread per site) ------------------------------------------------------------
    def forward(self, site: str, hidden, mask):
        with self._cv:
            self._check(site)
            if not self._forward:
                self._first_forward = time.monotonic()
            self._forward[site] = (hidden, mask)
            self._cv.notify_all()
            return self._await(site, self._try_forward)

    def backward(self, site: str, grad):
        with self._cv:
            self._check(site)
            if self._group is None or site not in self._group:
                raise SiteDropped(f"{site}: a gradient without a pending forward step")
            self._backward[site] = grad
            self._cv.notify_all()
            return self._await(site, self._try_backward)

    # -- under the lock ------------------------------------------------------------------------------
    def _check(self, site: str) -> None:
        self._last_seen[site] = time.monotonic()
        if site in self.dropped or site not in self.active:
            raise SiteDropped(f"{site} is not training in this round (it left or was dropped)")

    def _await(self, site, attempt):
        while site not in self._results:
            attempt()
            if site in self._results:
                break
            if site in self.dropped or site not in self.active:
                raise SiteDropped(f"{site} left the round")
            self._cv.wait(timeout=0.5)
        return self._results.pop(site)

    def _drop(self, sites) -> None:
        for site in sites:
            self.active.discard(site)
            self.dropped.add(site)

    def _try_forward(self) -> None:
        if self._group is not None:
            self._try_backward()  # the group's last sites may have left without a gradient
        if self._group is not None or not self._forward:
            return
        missing = self.active - set(self._forward)
        if missing and time.monotonic() - self._first_forward < self.site_timeout:
            return
        self._drop(missing)
        group = sorted(self._forward)
        outputs = self.server.forward([self._forward[s] for s in group])
        self._forward = {}
        self._group, self._group_done, self._backward = group, time.monotonic(), {}
        self._results.update(zip(group, outputs))
        self.groups += 1
        self.group_sizes.append(len(group))
        self._cv.notify_all()

    def _try_backward(self) -> None:
        if self._group is None:
            return
        waiting = [s for s in self._group if s in self.active and s not in self._backward]
        if waiting and time.monotonic() - self._group_done < self.site_timeout:
            return
        self._drop(waiting)
        group = self._group
        grads = self.server.backward([self._backward.get(s) for s in group])
        self._group = None
        self._results.update((s, g) for s, g in zip(group, grads) if s in self._backward)
        self._backward = {}
        self._cv.notify_all()
