# cython: language_level=3
"""Compiled twin of ``conn_storm.py``: see that module. Same behaviour, with the sockets,
the epoll instance and every handshake's state in C."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINPROGRESS, EINTR, errno
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport close



cdef extern from "sys/epoll.h" nogil:
    ctypedef union epoll_data_t:
        int fd
    cdef struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL, EPOLLIN, EPOLLOUT, EPOLL_CLOEXEC

cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct sockaddr_storage:
        pass
    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr *addr, socklen_t len)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
    int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int AF_INET, AF_INET6, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC, SOL_SOCKET, SO_ERROR
    int MSG_NOSIGNAL

cdef extern from "netinet/in.h" nogil:
    int IPPROTO_TCP
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr
    unsigned short htons(unsigned short)

cdef extern from "netinet/tcp.h" nogil:
    int TCP_NODELAY

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)


__all__ = [
    "CLOSED", "CONNECT_ERROR", "MALFORMED", "REFUSED", "TIMED_OUT", "Storm", "connack_status",
]

CONNECT_ERROR = 1
CLOSED = 2
TIMED_OUT = 3
REFUSED = 4
MALFORMED = 5

cdef enum:
    _BATCH = 256  # events taken per epoll_wait
    _GOT = 8  # bytes of a reply kept: a CONNACK's fixed header, flags and code fit in 7
cdef enum:
    _FREE = 0
    _CONNECTING = 1
    _WAITING = 2
    _HELD = 3

cdef char _PINGREQ[2]
_PINGREQ[0] = <char>0xC0
_PINGREQ[1] = 0
cdef char _DISCONNECT[2]
_DISCONNECT[0] = <char>0xE0
_DISCONNECT[1] = 0


cdef struct _Conn:
    int state
    long long began
    Py_ssize_t packet  # index in packets
    Py_ssize_t slot  # index in the waiting array while in flight
    int got
    unsigned char buf[_GOT]


cdef inline long long _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int _status(const unsigned char *p, Py_ssize_t n, int *value) noexcept:
    """connack_status in C: -1 undecided, 0 accepted, else the kind (value set)."""
    cdef Py_ssize_t pos = 1, length = 0, shift = 0
    cdef unsigned char b
    if n == 0:
        return -1
    if p[0] != 0x20:
        value[0] = p[0]
        return MALFORMED
    while True:
        if pos >= n:
            return -1
        if pos > 4:
            value[0] = 0x20
            return MALFORMED
        b = p[pos]
        length |= <Py_ssize_t>(b & 0x7F) << shift
        shift += 7
        pos += 1
        if b < 0x80:
            break
    if length < 2:
        value[0] = 0x20
        return MALFORMED
    if n < pos + 2:
        return -1
    if p[pos + 1]:
        value[0] = p[pos + 1]
        return REFUSED
    return 0


def connack_status(bytes data):
    cdef int value = 0
    cdef int kind = _status(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &value)
    if kind < 0:
        return None
    if kind == 0:
        return (0, 0)
    return (kind, value)


cdef class Storm:
    cdef int epfd, family
    cdef sockaddr_storage address
    cdef socklen_t address_len
    cdef list packets
    cdef _Conn *conns  # by descriptor
    cdef Py_ssize_t capacity
    cdef int *waiting  # descriptors of the handshakes in flight
    cdef public Py_ssize_t max_pending, allowed, opened, pending, connected, failed, dropped
    cdef public long long timeout_ns, last_connack_ns
    cdef public list latencies
    cdef public dict failures
    cdef public object first_error
    cdef object _closed

    def __cinit__(self):
        self.epfd = -1
        self.conns = NULL
        self.waiting = NULL

    def __init__(self, str host, int port, list packets, Py_ssize_t max_pending, long long timeout_ns):
        cdef sockaddr_in *v4 = <sockaddr_in *>&self.address
        cdef sockaddr_in6 *v6 = <sockaddr_in6 *>&self.address
        cdef bytes ascii = host.encode()
        cdef int ok
        memset(&self.address, 0, sizeof(sockaddr_storage))
        if ":" in host:
            self.family = AF_INET6
            v6.sin6_family = AF_INET6
            v6.sin6_port = htons(<unsigned short>port)
            ok = inet_pton(AF_INET6, ascii, &v6.sin6_addr)
            self.address_len = sizeof(sockaddr_in6)
        else:
            self.family = AF_INET
            v4.sin_family = AF_INET
            v4.sin_port = htons(<unsigned short>port)
            ok = inet_pton(AF_INET, ascii, &v4.sin_addr)
            self.address_len = sizeof(sockaddr_in)
        if ok != 1:
            raise OSError(f"illegal IP address string passed to inet_pton: {host!r}")
        self.packets = packets
        self.max_pending = max(1, max_pending)
        self.timeout_ns = timeout_ns
        self.allowed = self.opened = self.pending = 0
        self.connected = self.failed = self.dropped = 0
        self.last_connack_ns = 0
        self.latencies = []
        self.failures = {CONNECT_ERROR: 0, CLOSED: 0, TIMED_OUT: 0, REFUSED: 0, MALFORMED: 0}
        self.first_error = None
        self.waiting = <int *>realloc(NULL, self.max_pending * sizeof(int))
        if self.waiting == NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self._closed = False

    def __dealloc__(self):
        cdef Py_ssize_t fd
        if self.conns != NULL:
            for fd in range(self.capacity):
                if self.conns[fd].state != _FREE:
                    close(<int>fd)
            free(self.conns)
        free(self.waiting)
        if self.epfd >= 0:
            close(self.epfd)

    def fileno(self):
        return self.epfd

    @property
    def finished(self):
        return self.connected + self.failed == len(self.packets)

    def allow(self, Py_ssize_t n):
        self.allowed = min(max(n, self.allowed), len(self.packets))
        self._fill()

    def step(self):
        cdef epoll_event events[_BATCH]
        cdef int n, i, fd
        while True:
            n = epoll_wait(self.epfd, events, _BATCH, 0)
            if n < 0:
                if errno == EINTR:
                    continue
                raise OSError(errno, "epoll_wait failed")
            for i in range(n):
                fd = events[i].data.fd
                if fd < self.capacity and self.conns[fd].state != _FREE:
                    self._ready(fd)
            if n < _BATCH:
                break
        self._expire(_now_ns())
        self._fill()

    def ping(self):
        cdef Py_ssize_t fd
        for fd in range(self.capacity):
            if self.conns[fd].state == _HELD:
                send(<int>fd, _PINGREQ, 2, MSG_NOSIGNAL)

    def close(self):
        cdef Py_ssize_t fd
        if self._closed:
            return
        for fd in range(self.capacity):
            if self.conns[fd].state == _HELD:
                send(<int>fd, _DISCONNECT, 2, MSG_NOSIGNAL)
            if self.conns[fd].state != _FREE:
                self.conns[fd].state = _FREE
                close(<int>fd)
        self.pending = 0
        close(self.epfd)
        self.epfd = -1
        self._closed = True

    # -- internals

    cdef int _fill(self) except -1:
        while self.opened < self.allowed and self.pending < self.max_pending:
            self._open(self.opened)
            self.opened += 1
        return 0

    cdef int _grow(self, int fd) except -1:
        cdef Py_ssize_t size = self.capacity
        cdef _Conn *grown
        if fd < size:
            return 0
        while size <= fd:
            size = size * 2 if size else 1024
        grown = <_Conn *>realloc(self.conns, size * sizeof(_Conn))
        if grown == NULL:
            raise MemoryError()
        memset(grown + self.capacity, 0, (size - self.capacity) * sizeof(_Conn))
        self.conns = grown
        self.capacity = size
        return 0

    cdef int _open(self, Py_ssize_t index) except -1:
        cdef int fd, one = 1, rc
        cdef epoll_event ev
        cdef long long began
        if not isinstance(self.packets[index], bytes):
            raise TypeError("packets must be bytes")
        fd = socket(self.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        if fd < 0:
            self._fail(CONNECT_ERROR, errno)
            return 0
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int))
        began = _now_ns()
        rc = connect(fd, <sockaddr *>&self.address, self.address_len)
        if rc != 0 and errno != EINPROGRESS:
            rc = errno
            close(fd)
            self._fail(CONNECT_ERROR, rc)
            return 0
        self._grow(fd)
        self.conns[fd].state = _CONNECTING
        self.conns[fd].began = began
        self.conns[fd].packet = index
        self.conns[fd].got = 0
        self.conns[fd].slot = self.pending
        self.waiting[self.pending] = fd
        self.pending += 1
        ev.events = EPOLLOUT
        ev.data.fd = fd
        epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev)
        return 0

    cdef int _ready(self, int fd) except -1:
        cdef _Conn *conn = &self.conns[fd]
        cdef int err = 0, kind, value = 0, take
        cdef socklen_t size = sizeof(int)
        cdef ssize_t got
        cdef bytes packet
        cdef epoll_event ev
        cdef unsigned char data[4096]
        cdef long long now
        if conn.state == _CONNECTING:
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size)
            if err:
                return self._end(fd, CONNECT_ERROR, err)
            packet = <bytes>self.packets[conn.packet]
            got = send(fd, PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), MSG_NOSIGNAL)
            if got < 0:
                return self._end(fd, CLOSED, errno)
            if got != PyBytes_GET_SIZE(packet):  # a fresh socket takes a CONNECT whole
                return self._end(fd, CLOSED, EAGAIN)
            conn.state = _WAITING
            ev.events = EPOLLIN
            ev.data.fd = fd
            epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, &ev)
            return 0
        got = recv(fd, data, sizeof(data), 0)
        if got < 0:
            if errno == EAGAIN or errno == EINTR:
                return 0
            err = errno
            got = 0
        if conn.state == _HELD:
            if got == 0:
                self.dropped += 1
                self._forget(fd)
            return 0
        if got == 0:
            return self._end(fd, CLOSED, err)
        take = min(<int>got, _GOT - conn.got)
        memcpy(conn.buf + conn.got, data, take)
        conn.got += take
        kind = _status(conn.buf, conn.got, &value)
        if kind < 0:
            return 0
        if kind:
            return self._end(fd, kind, value)
        now = _now_ns()
        self._unwait(fd)
        conn.state = _HELD
        self.connected += 1
        self.latencies.append(now - conn.began)
        self.last_connack_ns = now
        return 0

    cdef int _expire(self, long long now) except -1:
        cdef Py_ssize_t i = 0
        cdef int fd
        while i < self.pending:
            fd = self.waiting[i]
            if now - self.conns[fd].began >= self.timeout_ns:
                self._end(fd, TIMED_OUT, 0)  # moves the last one into slot i
            else:
                i += 1
        return 0

    cdef void _unwait(self, int fd) noexcept:
        cdef Py_ssize_t slot = self.conns[fd].slot
        cdef int last
        self.pending -= 1
        last = self.waiting[self.pending]
        self.waiting[slot] = last
        self.conns[last].slot = slot

    cdef int _end(self, int fd, int kind, int value) except -1:
        self._unwait(fd)
        self._forget(fd)
        return self._fail(kind, value)

    cdef void _forget(self, int fd) noexcept:
        self.conns[fd].state = _FREE
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, NULL)
        close(fd)

    cdef int _fail(self, int kind, int value) except -1:
        self.failed += 1
        self.failures[kind] += 1
        if self.first_error is None:
            self.first_error = (kind, value)
        return 0
