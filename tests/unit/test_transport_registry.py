"""uvloop's registry of transports by descriptor, with plain weak references
(``robustmq.node.lighten_transport_registry``): uvloop must still refuse a reader on a
live transport's descriptor, allow one once the transport is gone, and the registry must
not keep a transport alive."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref

import pytest
import uvloop

from robustmq.node import _FdTransports, lighten_transport_registry


def _registry(loop: asyncio.AbstractEventLoop) -> list[object]:
    return [o for o in gc.get_referents(loop) if isinstance(o, weakref.WeakValueDictionary)]


def test_uvloop_still_guards_transport_descriptors_with_the_light_registry() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        assert lighten_transport_registry(loop)
        (registry,) = _registry(loop)
        assert type(registry) is _FdTransports
        assert not lighten_transport_registry(loop)  # done once

        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        fd = transport.get_extra_info("socket").fileno()
        assert registry[fd] is transport
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, lambda: None)

        gone = weakref.ref(transport)
        transport.close()
        await asyncio.sleep(0.05)
        del transport
        gc.collect()
        assert gone() is None  # the registry holds no strong reference
        with pytest.raises(KeyError):
            registry[fd]
        spare = socket.socket()  # a descriptor the dead entry's number may now name
        try:
            loop.add_reader(spare.fileno(), lambda: None)  # no live transport: allowed
            loop.remove_reader(spare.fileno())
        finally:
            spare.close()
        server.close()
        await server.wait_closed()

    uvloop.run(run())


def test_another_loop_is_left_as_it_is() -> None:
    async def run() -> bool:
        return lighten_transport_registry(asyncio.get_running_loop())

    loop = asyncio.new_event_loop()  # the standard library's: no such registry
    try:
        assert not loop.run_until_complete(run())
    finally:
        loop.close()
