"""A blocking client for mpcd: one DEALER socket, one session on the daemon."""
import collections
import os
import time

import numpy as np
import zmq

from . import protocol


class MpcdError(Exception):
    """The daemon refused a request; ``code`` and ``name`` say why (docs/protocol.md)."""

    def __init__(self, reply):
        super().__init__(f"mpcd refused the request ({reply.name}): {reply.message}")
        self.code = reply.code
        self.name = reply.name
        self.message = reply.message


class MpcdTimeout(TimeoutError):
    """No reply within the timeout: the daemon is down, overloaded or unreachable."""


MAX_REPLY_BYTES = 64 << 20


class Controller:
    """Actions from an mpcd daemon.

    >>> with Controller("tcp://127.0.0.1:5555") as controller:
    ...     action = controller.act(observation)

    Each Controller is one session on the daemon, with its own warm-started plan. On a timeout
    the socket is replaced (dropping replies that arrive late), so the next call starts clean;
    ZeroMQ reconnects by itself when the daemon comes back.
    """

    def __init__(self, endpoint="tcp://127.0.0.1:5555", timeout=1.0, identity=None, context=None,
                 server_public_key=None, public_key=None, secret_key=None):
        """With `server_public_key` (the daemon's, Z85) and this client's `public_key` and
        `secret_key`, the connection is CURVE-encrypted and the daemon admits the client only if
        its public key is in the daemon's authorized_keys (docs/security.md)."""
        self.endpoint = endpoint
        self._curve = (server_public_key, public_key, secret_key) if server_public_key else None
        self.timeout = timeout
        self.identity = identity or b"py-" + os.urandom(4).hex().encode()
        self._context = context or zmq.Context.instance()
        self._socket = None
        self._sequence = 0
        self._info = None
        # the task_fingerprint of the last hello, and the sequence number sent last before it
        self._fingerprint = 0
        self._hello_after = 0
        # action replies that arrived while set_parameters waited, for receive()
        self._held = collections.deque(maxlen=64)
        self.last = None
        self._connect()

    def _connect(self):
        if self._socket is not None:
            self._socket.close(linger=0)
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        # a daemon's replies are a few KiB (a plan of H actions, a hello of names): anything far
        # larger is not one, and is dropped with its connection rather than held in memory
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        self._socket.setsockopt(zmq.IDENTITY, self.identity)
        self._socket.setsockopt(zmq.RECONNECT_IVL, 50)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        if self._curve:
            server, public, secret = (k.encode() if isinstance(k, str) else k for k in self._curve)
            self._socket.setsockopt(zmq.CURVE_SERVERKEY, server)
            self._socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
            self._socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
        self._socket.connect(self.endpoint)

    def close(self):
        if self._socket is not None:
            try:
                self._socket.send_multipart(protocol.bye(), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _receive(self, timeout, accept):
        """Replies until ``accept`` takes one, or MpcdTimeout after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(max(1, int(remaining * 1000))):
                self._connect()
                self._held.clear()
                raise MpcdTimeout(f"no reply from {self.endpoint} within {timeout:.3f} s")
            frames = self._socket.recv_multipart()
            info = self._info or {}
            reply = protocol.decode(frames, info.get("action_dim"), info.get("diagnostics", ()))
            if isinstance(reply, protocol.ErrorReply) and reply.code == protocol.TASK_CHANGED and (
                    reply.sequence == 0 or reply.sequence > self._hello_after):
                # the hello held describes a task the daemon no longer has: the next call asks again
                # (a refusal of a message sent before the last hello is old news)
                self._info = None
            result = accept(reply)
            if result is not None:
                return result

    @property
    def info(self):
        """The daemon's hello reply: task, dimensions, names, bounds, dt, rate (a dict)."""
        if self._info is None:
            self._socket.send_multipart(protocol.hello())
            self._info = self._receive(self.timeout, lambda r: r if isinstance(r, dict) else None)
            self._fingerprint = self._info.get("task_fingerprint", 0)
            self._hello_after = self._sequence
        return self._info

    def _held_task(self):
        """The task_fingerprint of the last hello: the daemon refuses a message carrying it with
        ``task_changed`` (MpcdError) once a reload or restart has changed the task, and the next
        act() or receive() says hello again, so that no action is taken under a stale description
        (dimensions, names, bounds). Until then it is still sent (send_observation() does not wait
        for a hello), and each observation is refused in turn."""
        return self._fingerprint

    def send_observation(self, observation, timestamp=0.0):
        """Sends an observation without waiting; returns its sequence number."""
        self._sequence += 1
        self._socket.send_multipart(protocol.observation(self._sequence, observation, timestamp, self._held_task()))
        return self._sequence

    def receive(self, timeout=None):
        """The next action reply, whatever observation it answers (realtime streaming)."""
        self.info
        if self._held:
            return self._held.popleft()
        return self._receive(self.timeout if timeout is None else timeout, self._accept_any)

    def _accept_any(self, reply):
        if isinstance(reply, protocol.ErrorReply):
            raise MpcdError(reply)
        return reply if isinstance(reply, protocol.ActionReply) else None

    def act(self, observation, timestamp=0.0):
        """The action for ``observation`` (a numpy array); the whole reply is in ``self.last``."""
        self.info
        sequence = self.send_observation(observation, timestamp)

        def accept(reply):
            if isinstance(reply, protocol.ErrorReply) and reply.sequence in (sequence, 0):
                raise MpcdError(reply)
            if isinstance(reply, protocol.ActionReply) and reply.observation_sequence == sequence:
                return reply
            return None  # a late reply to an earlier observation

        self.last = self._receive(self.timeout, accept)
        return self.last.action

    def set_parameters(self, **values):
        """Sets some of the task's parameters for this session only, from its next plan: each a
        number or a sequence of numbers, named as in ``info["parameters"]`` (e.g.
        ``set_parameters(goal=[1.0, 2.0])``). All or none: MpcdError when the daemon refuses
        one (unknown name, wrong length, not finite, out of its bounds), and the session keeps
        what it had. Returns every parameter in force (a dict of lists)."""
        self.info
        self._sequence += 1
        sequence = self._sequence
        self._socket.send_multipart(protocol.parameters(sequence, values, self._held_task()))

        def accept(reply):
            if isinstance(reply, protocol.ErrorReply) and reply.sequence == sequence:
                raise MpcdError(reply)
            if isinstance(reply, protocol.ParametersReply) and reply.sequence == sequence:
                return reply.values
            if isinstance(reply, protocol.ActionReply):
                self._held.append(reply)  # a realtime stream goes on meanwhile
            return None

        return self._receive(self.timeout, accept)

    def reset(self):
        """Ends this session on the daemon (its warm start is forgotten); the next act() opens a new one."""
        self._held.clear()
        self._socket.send_multipart(protocol.bye())
