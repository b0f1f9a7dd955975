"""What the server sends, and what it gives up when a client is slow: frames first, never control.

Every send is non-blocking: a client whose queue is full (its ZeroMQ high-water mark and the socket
buffers) cannot stall the loop. A frame that finds the queue full is dropped. A control message
(`welcome`, `bye`, `error`, `stats`, `pong`) waits in a small per-peer queue instead, and while it
waits that peer's frames are dropped, so the control message takes the first free place. Waiting
control messages are retried every loop pass and given up only when the peer is gone, after
`max_age_s`, or past the per-peer and total bounds (counted in `control_dropped`).
"""

from __future__ import annotations

import collections
import logging
import time

import zmq

log = logging.getLogger(__name__)

MAX_WAITING_PER_PEER = 32
MAX_WAITING_PEERS = 1024


class Outbox:
    """Non-blocking sends on a ROUTER socket (with ROUTER_MANDATORY) to peers by routing id."""

    def __init__(self, sock: zmq.Socket, max_age_s: float) -> None:
        self.sock = sock
        self.max_age_s = max_age_s
        # routing id -> (when the oldest waiting message was queued, the messages in order)
        self._waiting: dict[bytes, tuple[float, collections.deque[bytes]]] = {}
        self.control_dropped = 0  # control messages given up (peer gone, never read, or over a bound)
        self.control_delayed = 0  # control messages that had to wait for room

    def _try(self, identity: bytes, payload: bytes) -> bool | None:
        """True: sent; False: the peer's queue is full; None: the peer is gone."""
        try:
            self.sock.send_multipart([identity, payload], zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:  # gone (it may come back with a new connection)
                return None
            raise

    def frame(self, identity: bytes, payload: bytes) -> bool:
        """Send a frame now or drop it (also dropped while a control message waits for this peer)."""
        return identity not in self._waiting and self._try(identity, payload) is True

    def control(self, identity: bytes, payload: bytes) -> bool:
        """Send a control message now, or queue it for this peer; False only if it is given up."""
        waiting = self._waiting.get(identity)
        if waiting is None:
            sent = self._try(identity, payload)
            if sent is not None and not sent:
                if len(self._waiting) >= MAX_WAITING_PEERS:
                    self.control_dropped += 1
                    return False
                self._waiting[identity] = (time.monotonic(), collections.deque([payload]))
                self.control_delayed += 1
            return sent is not None
        if len(waiting[1]) >= MAX_WAITING_PER_PEER:
            self.control_dropped += 1
            return False
        waiting[1].append(payload)
        self.control_delayed += 1
        return True

    def flush(self) -> None:
        """Retry the waiting control messages, oldest first per peer (cheap when none wait)."""
        if not self._waiting:
            return
        now = time.monotonic()
        for identity, (since, queue) in list(self._waiting.items()):
            before, sent = len(queue), None
            while queue and (sent := self._try(identity, queue[0])):
                queue.popleft()
            if not queue:
                del self._waiting[identity]
            elif sent is None or now - since > self.max_age_s:  # gone, or not reading at all
                log.debug("gave up %d control message(s) to %s", len(queue), identity.hex())
                self.control_dropped += len(queue)
                del self._waiting[identity]
            elif len(queue) < before:  # it reads: its clock starts again
                self._waiting[identity] = (now, queue)
