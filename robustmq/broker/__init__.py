"""The stateless broker role: client connections, protocol parsing and message routing."""
