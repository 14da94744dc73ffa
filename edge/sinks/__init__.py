"""Output sinks: where the runtime's messages go besides (or instead of) the ZeroMQ PUB socket.

A sink takes the messages exactly as the runtime publishes them: ``publish(topic, payload)`` with
the ZeroMQ topic (``event.<stream>``, ``scores.<stream>``, ``status``; see edge/messages.py) and the
payload dict, returns ``True`` when the message was accepted, never blocks and never raises for a
peer that is down; ``close()`` ends it. :class:`edge.sinks.mqtt.MqttSink` is one.
"""
