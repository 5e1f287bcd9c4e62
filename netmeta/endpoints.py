"""Several API servers, one at a time: which URL a component calls now.

Several ``netmeta server`` processes may serve one PostgreSQL; an agent or a
metadata process given all their URLs (``api_urls``) keeps calling one and
moves to the next when a call to it fails, round-robin, so a server that is
killed costs each follower one failed call and a relist from the next one.
"""

from __future__ import annotations

import threading
from typing import Sequence


class Endpoints:
    """A ring of base URLs; :attr:`current` until :meth:`failed` moves on."""

    def __init__(self, urls: Sequence[str]) -> None:
        cleaned = [u.rstrip("/") for u in urls if u.strip()]
        if not cleaned:
            raise ValueError("at least one API URL is needed")
        self.urls = tuple(cleaned)
        self._index = 0
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        return self.urls[self._index]

    def failed(self, url: str | None = None) -> str:
        """The call to ``url`` (default: the current one) failed: move on unless someone already did."""
        with self._lock:
            if url is None or url == self.urls[self._index]:
                self._index = (self._index + 1) % len(self.urls)
            return self.urls[self._index]

    def __len__(self) -> int:
        return len(self.urls)
