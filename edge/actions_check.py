"""``cezsar actions check`` and ``cezsar config check``: an actions file against what it will run with.

Beyond the schema (edge/actions.py), warnings with the line they are about:

- an action's ``streams:`` naming no stream of the site, or its ``zone:`` naming no zone of those
  streams (with the names there are), given the site file (``--config``) or the stream names;
- a sentence (a description through its templates) longer than the text encoder reads: the deploy
  folder's tokenizer counts its tokens, the manifest's ``text_max_length`` is where it is cut off;
- an action described in words the model's training captions never had (the manifest's ``trained_on``,
  cezsar.trainedon), given the deploy folder;
- no ``background:`` (:func:`edge.actions.warnings`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cezsar import yamlfile
from cezsar.yamlfile import Loc
from edge.actions import ActionsError, ActionSet, actions_document, expand, warnings

if TYPE_CHECKING:
    from cezsar.deploy.manifest import Manifest

Streams = Mapping[str, Sequence[str]]  # stream -> its zone names


def site_streams(cfg: Any) -> dict[str, list[str]]:
    """A site config's streams and their zones (``cfg.sources[].name``, ``.zones[].name``)."""
    return {s.name: [z.name for z in s.zones] for s in cfg.sources}


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def stream_warnings(aset: ActionSet, streams: Streams) -> list[tuple[Loc, str]]:
    """Actions whose ``streams:`` or ``zone:`` name something the site does not have."""
    out: list[tuple[Loc, str]] = []
    known = sorted(streams)
    zones = "; ".join(f"{s}: {_names(list(streams[s]))}" for s in known)
    for i, a in enumerate(aset.actions):
        unknown = [s for s in a.streams if s not in streams]
        if unknown:
            listed = ", ".join(f"'{s}'" for s in unknown)
            out.append((("actions", i, "streams"), f"no stream named {listed} (streams: {_names(known)})"))
        if a.zone is None:
            continue
        lacking = [s for s in a.streams if s in streams and a.zone not in streams[s]]
        if lacking:
            out.append(
                (("actions", i, "zone"), f"zone '{a.zone}' is not defined for {', '.join(lacking)} (zones: {zones})")
            )
        elif not a.streams and not any(a.zone in z for z in streams.values()):
            out.append((("actions", i, "zone"), f"no stream has a zone named '{a.zone}' (zones: {zones or 'none'})"))
    return out


def token_warnings(
    aset: ActionSet, deploy: str | os.PathLike[str], manifest: Manifest | None = None
) -> list[tuple[Loc, str]]:
    """Sentences the deploy folder's text encoder would cut off (more tokens than ``text_max_length``);
    ``manifest``: the folder's, when the caller has it loaded."""
    from cezsar.deploy.layout import TOKENIZER
    from cezsar.deploy.manifest import load_manifest
    from cezsar.tokenize import token_counts

    manifest = manifest if manifest is not None else load_manifest(Path(deploy))
    tokenizer = manifest.verified(Path(deploy), TOKENIZER)
    limit = manifest.text_max_length
    items: list[tuple[Loc, str]] = []  # (location of the description, one sentence it stands for)
    for i, a in enumerate(aset.actions):
        for j, d in enumerate(a.descriptions):
            items += [(("actions", i, "descriptions", j), s) for s in expand(d, aset.templates_for(a))]
    for j, group in enumerate(aset.background_texts()):
        items += [(("background", j), s) for s in group]
    counts = token_counts(tokenizer, [s for _, s in items])
    out = []
    for (loc, sentence), n in zip(items, counts, strict=True):
        if n > limit:
            shown = sentence if len(sentence) <= 60 else sentence[:57] + "..."
            out.append((loc, f"'{shown}' is {n} tokens; the text encoder reads {limit} (the rest is cut off)"))
    return out


def domain_warnings(aset: ActionSet, trained_on: Mapping[str, Any] | None) -> list[tuple[Loc, str]]:
    """Actions described in words the model's training captions never had (cezsar.trainedon): a shapes
    model asked about people falling. Nothing when the manifest records no training vocabulary."""
    from cezsar import trainedon

    index = {a.name: i for i, a in enumerate(aset.actions)}
    flagged = trainedon.unfamiliar_actions(((a.name, list(a.descriptions)) for a in aset.actions), trained_on)
    return [
        (("actions", index[name], "descriptions"), trainedon.warning(name, unknown, trained_on or {}))
        for name, unknown, _ in flagged
    ]


def check_actions_file(
    path: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    streams: Streams | None = None,
    deploy: str | os.PathLike[str] | None = None,
) -> tuple[ActionSet, list[str]]:
    """Validate an actions file (raises :class:`ActionsError` with every problem) and collect its
    warnings, each naming ``file:line:col`` where it can: against the streams and zones of the site file
    ``config`` (or ``streams``), and the token counts of the deploy folder ``deploy``."""
    p = Path(path)
    if not p.is_file():
        raise ActionsError(f"{p}: actions file not found")
    doc = actions_document(yamlfile.read(p, error=ActionsError), str(p))
    aset = doc.validate(ActionSet)
    if config is not None:
        from edge.settings import load_site_config

        streams = site_streams(load_site_config(config))
    located: list[tuple[Loc, str]] = []
    if streams is not None:
        located += stream_warnings(aset, streams)
    if deploy is not None:
        from cezsar.deploy.manifest import load_manifest

        manifest = load_manifest(Path(deploy))
        located += token_warnings(aset, deploy, manifest)
        located += domain_warnings(aset, manifest.extra.get("trained_on"))
    out = [f"{p}: {w}" for w in warnings(aset)]
    for loc, msg in located:
        where, line, col = doc.locate(loc)
        out.append(f"{p}:{line}:{col}: {where}: {msg}")
    return aset, out


def site_actions_warnings(cfg: Any) -> list[str]:
    """``cezsar config check``: the site's actions file, validated against the site's streams and zones
    (raises :class:`ActionsError` when it is invalid); its warnings. Nothing when it does not exist
    (the file check reports that)."""
    if not Path(cfg.actions).is_file():
        return []
    return check_actions_file(cfg.actions, streams=site_streams(cfg))[1]


def runtime_warnings(aset: ActionSet, streams: Streams) -> list[str]:
    """What a runtime says about its actions at start: the file's own warnings, then the ``streams:`` and
    ``zone:`` that name nothing the runtime has (with the names it has). (Actions far from what the model
    was trained on are told on every change: :class:`DomainWatch`.)"""
    return [*warnings(aset), *(w for _, w in stream_warnings(aset, streams))]


class DomainWatch:
    """An ActionStore's ``on_change``: ``then(aset)`` (the recognizer taking the set; raising rejects it),
    then, once per action and again after its descriptions change, ``say`` a line when it is described in
    words the model's training captions never had."""

    def __init__(
        self, trained_on: Mapping[str, Any] | None, say: Callable[[str], None], then: Callable[[ActionSet], None]
    ) -> None:
        self.trained_on, self.say, self.then = trained_on, say, then
        self._told: set[tuple[str, tuple[str, ...]]] = set()

    def __call__(self, aset: ActionSet) -> None:
        self.then(aset)
        by_name = {a.name: tuple(a.descriptions) for a in aset.actions}
        for loc, message in domain_warnings(aset, self.trained_on):
            name = aset.actions[int(loc[1])].name
            key = (name, by_name[name])
            if key not in self._told:
                self._told.add(key)
                self.say(message)
