"""`cezsar listen`, `cezsar keys`, `cezsar schemas`: subscribe to a runtime, CURVE keys, message schemas."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from edge.endpoints import DEFAULT_PUB


def listen_cmd(
    endpoint: str = typer.Argument(DEFAULT_PUB, help="The runtime's PUB endpoint."),
    topic: list[str] = typer.Option(
        [], "--topic", "-t", help="Topic prefix: event. / scores. / status / 'event.cam1 ' (repeat; default all)."
    ),
    count: int = typer.Option(0, "--count", "-n", help="Exit after this many messages (0: never)."),
    timeout: float = typer.Option(0.0, "--timeout", help="Exit 1 if no message arrives for this long (0: wait)."),
    conflate: bool = typer.Option(False, "--conflate", help="Keep only the newest message (slow consumers)."),
    curve_secret: Path = typer.Option(None, "--curve-secret", help="Your CURVE secret key file (.key_secret)."),
    curve_server: Path = typer.Option(None, "--curve-server", help="The runtime's CURVE public key file (.key)."),
) -> None:
    """Print every message of a running runtime as one JSON object per line ({"topic", ...})."""
    from edge.client import Subscriber
    from edge.security import CurveClient

    n = 0
    curve = CurveClient.from_options(curve_secret, curve_server)
    with Subscriber(endpoint, topic, conflate=conflate, curve=curve) as sub:
        try:
            while count <= 0 or n < count:
                msg = sub.recv(timeout if timeout > 0 else None)
                if msg is None:
                    print(f"no message for {timeout:g} s", file=sys.stderr)
                    raise typer.Exit(1)
                sys.stdout.write(json.dumps({"topic": msg.topic, **msg.data}, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                n += 1
        except KeyboardInterrupt:
            pass


def keys_cmd(
    out_dir: Path = typer.Argument(..., help="Folder for the key files."),
    name: str = typer.Option("server", "--name", help="Base name: NAME.key (public) and NAME.key_secret (secret)."),
    force: bool = typer.Option(False, "--force", help="Replace existing key files."),
) -> None:
    """Generate a ZeroMQ CURVE key pair (public NAME.key, secret NAME.key_secret written 0600)."""
    from edge.security import generate_keys

    public, secret = generate_keys(out_dir, name, force)
    print(f"public key: {public}")
    print(f"secret key: {secret} (mode 600; keep it private)")


def schemas_cmd(
    out: Path = typer.Option(
        Path("schemas"), "--out", help="Folder for the JSON Schema files (one per topic, and the actions file's)."
    ),
) -> None:
    """Write the JSON Schemas of every published message and control reply (edge/messages.py) and of the
    actions file (edge/actions.py, actions.schema.json)."""
    from cezsar import atomic
    from edge.actions import json_schema as actions_schema
    from edge.messages import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.json": schema for name, schema in json_schemas().items()}
    files["actions.schema.json"] = actions_schema()
    for name, schema in files.items():
        atomic.write_text(out / name, json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        print(out / name)


def register(app: typer.Typer) -> None:
    app.command("schemas")(schemas_cmd)
    app.command("keys")(keys_cmd)
    app.command("listen")(listen_cmd)
