"""`cezsar actions ...`: list and change a running runtime's actions (control socket); check and init files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from cezsar.errors import CezsarError
from edge.endpoints import DEFAULT_CONTROL

actions_app = typer.Typer(
    help="List and change the actions of a running runtime (control socket).", no_args_is_help=True
)

CONTROL_OPT = typer.Option(DEFAULT_CONTROL, "--control", "-c", help="The runtime's control endpoint.")
TIMEOUT_OPT = typer.Option(5.0, "--timeout", help="Seconds to wait for the reply.")
CURVE_SECRET_OPT = typer.Option(None, "--curve-secret", help="Your CURVE secret key file (.key_secret).")
CURVE_SERVER_OPT = typer.Option(None, "--curve-server", help="The runtime's CURVE public key file (.key).")


def _control_client(control: str, timeout: float, curve_secret: Path | None, curve_server: Path | None) -> Any:
    from edge.client import ControlClient
    from edge.security import CurveClient

    return ControlClient(control, timeout, curve=CurveClient.from_options(curve_secret, curve_server))


def _fields(
    description: list[str],
    threshold: float | None,
    hysteresis: float | None,
    min_duration: float | None,
    cooldown: float | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if description:
        out["descriptions"] = list(description)
    for k, v in (
        ("threshold", threshold),
        ("hysteresis", hysteresis),
        ("min_duration", min_duration),
        ("cooldown", cooldown),
    ):
        if v is not None:
            out[k] = v
    return out


def _print_set(reply: dict[str, Any]) -> None:
    acts = reply.get("actions", [])
    print(f"{len(acts)} action(s), version {reply.get('version')}, file {reply.get('file')}")
    for a in acts:
        print(
            f"  {a['name']}: threshold {a['threshold']:g}, hysteresis {a['hysteresis']:g}, "
            f"min_duration {a['min_duration']:g} s, cooldown {a['cooldown']:g} s"
        )
        for d in a["descriptions"]:
            print(f"      - {d}")
    if reply.get("background"):
        print("  background: " + " | ".join(reply["background"]))
    if reply.get("file_error"):
        print(f"  actions file problem: {reply['file_error']}")


@actions_app.command("list")
def actions_list(
    control: str = CONTROL_OPT,
    timeout: float = TIMEOUT_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the raw reply."),
    curve_secret: Path = CURVE_SECRET_OPT,
    curve_server: Path = CURVE_SERVER_OPT,
) -> None:
    """List the active actions."""
    with _control_client(control, timeout, curve_secret, curve_server) as c:
        reply = c.list()
    print(json.dumps(reply, ensure_ascii=False)) if as_json else _print_set(reply)


@actions_app.command("add")
def actions_add(
    name: str = typer.Argument(..., help="Action name."),
    description: list[str] = typer.Option(..., "--description", "-d", help="A description (repeat for several)."),
    threshold: float = typer.Option(None, "--threshold", help="Smoothed score at which an event starts."),
    hysteresis: float = typer.Option(None, "--hysteresis", help="The event ends below threshold minus this."),
    min_duration: float = typer.Option(None, "--min-duration", help="Seconds above threshold before an event starts."),
    cooldown: float = typer.Option(None, "--cooldown", help="Seconds after an end before the action can start again."),
    control: str = CONTROL_OPT,
    timeout: float = TIMEOUT_OPT,
    curve_secret: Path = CURVE_SECRET_OPT,
    curve_server: Path = CURVE_SERVER_OPT,
) -> None:
    """Add an action (written back to the actions file)."""
    with _control_client(control, timeout, curve_secret, curve_server) as c:
        reply = c.add({"name": name, **_fields(description, threshold, hysteresis, min_duration, cooldown)})
    print(f"added '{name}' ({len(reply.get('actions', []))} actions)")


@actions_app.command("update")
def actions_update(
    name: str = typer.Argument(..., help="Action name."),
    description: list[str] = typer.Option([], "--description", "-d", help="Replace the descriptions (repeat)."),
    threshold: float = typer.Option(None, "--threshold", help="Smoothed score at which an event starts."),
    hysteresis: float = typer.Option(None, "--hysteresis", help="The event ends below threshold minus this."),
    min_duration: float = typer.Option(None, "--min-duration", help="Seconds above threshold before an event starts."),
    cooldown: float = typer.Option(None, "--cooldown", help="Seconds after an end before the action can start again."),
    rename: str = typer.Option(None, "--rename", help="New name."),
    control: str = CONTROL_OPT,
    timeout: float = TIMEOUT_OPT,
    curve_secret: Path = CURVE_SECRET_OPT,
    curve_server: Path = CURVE_SERVER_OPT,
) -> None:
    """Change fields of an action."""
    fields = _fields(description, threshold, hysteresis, min_duration, cooldown)
    if rename:
        fields["name"] = rename
    if not fields:
        raise CezsarError("actions update: nothing to change (give --description, --threshold, ...)")
    with _control_client(control, timeout, curve_secret, curve_server) as c:
        c.request({"op": "update", "name": name, "fields": fields})
    print(f"updated '{name}'")


@actions_app.command("remove")
def actions_remove(
    name: str = typer.Argument(..., help="Action name."),
    control: str = CONTROL_OPT,
    timeout: float = TIMEOUT_OPT,
    curve_secret: Path = CURVE_SECRET_OPT,
    curve_server: Path = CURVE_SERVER_OPT,
) -> None:
    """Remove an action."""
    with _control_client(control, timeout, curve_secret, curve_server) as c:
        reply = c.remove(name)
    print(f"removed '{name}' ({len(reply.get('actions', []))} actions left)")


@actions_app.command("check")
def actions_check(
    path: Path = typer.Argument(..., help="Actions YAML file."),
    config: Path = typer.Option(
        None, "--config", help="Site file (site.yaml): warn about streams and zones it does not have."
    ),
    deploy: Path = typer.Option(
        None, "--deploy", help="Deploy folder: warn about sentences its text encoder would cut off (token count)."
    ),
) -> None:
    """Validate an actions file offline: every problem on one line as FILE:LINE:COLUMN: KEY: PROBLEM (exit 2)."""
    from cezsar.yamlfile import ConfigError
    from edge.actions_check import check_actions_file

    try:
        aset, warns = check_actions_file(path, config=config, deploy=deploy)
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        raise typer.Exit(2) from None
    for w in warns:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"{path}: ok, {len(aset.actions)} action(s): {', '.join(aset.names()) or 'none'}; "
        f"{len(aset.background)} background description(s)"
    )


STARTER_ACTIONS = """\
# Actions for `cezsar run --actions THIS_FILE`; edits apply live while it runs. Check it with
# `cezsar actions check THIS_FILE`. Every key is described in docs/edge.md ("The actions file").
defaults:
  threshold: 0.05        # an event starts when the smoothed score (cosine - best background) reaches this
  hysteresis: 0.03       # ... and ends when it falls below threshold - hysteresis
  min_duration: 1.0      # seconds above threshold before an event starts
  cooldown: 2.0          # seconds after an end before the same action can start again
# Every description (and background) is embedded through each template ({} = the description), and the
# sentences are averaged: the text model then reads them as it was trained to. An action may have its own.
templates:
  - a video of {}.
  - a photo of {}.
  - "{}"
# What "nothing happening" looks like at your site. Scores are measured against the best of these;
# without them the threshold applies to raw cosines and is rarely right.
background:
  - an empty room
  - nobody moving
  - a still scene with no one in it
actions:
  - name: person walking
    descriptions:
      - a person walking across the room
      - someone walks past
  - name: person falling
    descriptions:
      - a person falls to the floor
      - someone collapses
    threshold: 0.08
  # - name: door opening
  #   descriptions: [a door opens]
  #   streams: [entrance]  # only on these streams
  #   zone: door           # only inside this zone (site.yaml sources[].zones or --zone)
  #   templates: ["{}"]    # this action's own templates (here: the descriptions as they are)
"""


@actions_app.command("init")
def actions_init(
    path: Path = typer.Argument(..., help="Actions YAML file to create."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
) -> None:
    """Write a starter actions file (background + two actions, commented) to edit for your site."""
    from cezsar import atomic
    from edge.actions import parse_actions

    if path.exists() and not force:
        raise CezsarError(f"{path}: exists (use --force to replace it)")
    parse_actions(STARTER_ACTIONS, "starter")  # the starter itself must be valid
    atomic.write_text(path, STARTER_ACTIONS)
    print(f"wrote {path}: edit the descriptions, then `cezsar run ... --actions {path}`")


@actions_app.command("backtest")
def actions_backtest(
    path: Path = typer.Argument(..., help="Actions file (new or edited) to replay over the history."),
    history: str = typer.Option(None, "--history", help="The history: SQLite file, folder or postgresql:// URL."),
    deploy: Path = typer.Option(None, "--deploy", help="Deploy folder: its text tower and model."),
    config: Path = typer.Option(None, "--config", help="Site file: its history and deploy folder."),
    since: str = typer.Option("24h", "--since", help="From: 24h, 30m, 7d ago, an ISO time or Unix seconds."),
    until: str = typer.Option(None, "--until", help="To (same forms; default: now)."),
    stream: str = typer.Option(None, "--stream", help="Only this stream."),
    per_day: float = typer.Option(
        None, "--per-day", help="Suggest each action's threshold for this many events a day."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Which events an actions file would have fired over the stored windows (docs/history.md)."""
    from edge.history import verbs

    verbs.backtest(
        path,
        history=history,
        deploy=deploy,
        config=config,
        since=since or None,
        until=until,
        stream=stream,
        per_day=per_day,
        as_json=as_json,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(actions_app, name="actions")
