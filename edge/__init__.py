"""Edge runtime: camera streams in sliding windows, zero-shot matching, ZeroMQ publishing."""

from cezsar import extras

# the runtime's own optional libraries (pyproject.toml's `edge` extra); the outputs that need more declare
# theirs beside their use (edge/sinks/mqtt/sink.py, edge/http/server.py, edge/http/metrics.py)
extras.requires("zmq", "pydantic", extra="edge")
