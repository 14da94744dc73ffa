"""Edge runtime: camera streams in sliding windows, zero-shot matching, ZeroMQ publishing."""
