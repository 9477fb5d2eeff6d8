"""The plugin model: how a capability package (alerts, drift, GPU health, ...) joins the service.

A package exports one ``Plugin``: where its section sits in the config file, the typed model
of that section, ``build(section, ctx)``, which returns the parts the service runs
(detectors and components) and may add API routes to ``ctx.routes``, and the ``mlvigil``
subcommands it adds. The application layer lists the plugins it ships
(``mlvigil.app.plugins.PLUGINS``); this module knows none of them.

A descriptor is light: the section model is named ``"module:Name"`` and imported on first use,
and ``build`` and each command import their modules when called, so listing the plugins (as
``mlvigil --help`` does) imports no pydantic, numpy or server code.

The config is validated once: ``config_model(plugins)`` is the kernel's ``Config`` with each
plugin's section typed by its own model, so one ``model_validate`` checks every key, and an
error names the key's full path (``alerts.routes.0.group_wait``) wherever it is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mlvigil.core.context import ServiceContext

SectionT = TypeVar("SectionT", bound="BaseModel")


def load_ref(ref: str) -> Any:
    """The object a ``"package.module:name"`` reference names, its module imported now."""
    module, _, name = ref.partition(":")
    if not name:
        raise ValueError(f"reference {ref!r} is not 'module:name'")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Command:
    """An ``mlvigil`` subcommand a plugin adds; its module is imported only when it runs."""

    name: str
    #: The line ``mlvigil --help`` lists.
    help: str
    #: ``"module:function"`` (or the function) taking argparse's subparsers and adding this
    #: command's parser, with ``set_defaults(func=...)`` for what it runs.
    add: str | Callable[[Any], Any]
    #: Shown by ``mlvigil NAME --help`` when the added parser has no description of its own.
    description: str = ""

    def add_to(self, subparsers: Any) -> None:
        """Import the command's module and add its full parser to ``subparsers``."""
        add = load_ref(self.add) if isinstance(self.add, str) else self.add
        add(subparsers)
        parser = subparsers.choices[self.name]
        if not parser.description:
            parser.description = self.description or self.help


@dataclass(frozen=True)
class Plugin(Generic[SectionT]):
    """One capability package's entry in the service."""

    #: Short name, used in logs and errors.
    name: str
    #: Path of its section in the config file: ``("alerts",)``, ``("detectors", "drift")``;
    #: empty for a plugin that only adds commands.
    section: tuple[str, ...] = ()
    #: The section's model (strict: an unknown key is an error; its defaults apply when
    #: absent), or ``"module:Name"`` to import it on first use (``section_model``).
    config: type[SectionT] | str | None = None
    #: The parts to run for a validated section: detectors (run by the detector loop) and
    #: components (started and stopped by the service); routes go on ``ctx.routes``. A
    #: ValueError is a setting the plugin cannot use, reported as a config error.
    build: Callable[[SectionT, ServiceContext], Sequence[Any]] | None = None
    #: The ``mlvigil`` subcommands it adds.
    commands: tuple[Command, ...] = ()

    def section_model(self) -> type[SectionT]:
        """The section's model class (imported now when named by reference)."""
        if self.config is None:
            raise TypeError(f"plugin {self.name} has no config section")
        model: type[SectionT] = load_ref(self.config) if isinstance(self.config, str) else self.config
        return model

    def section_of(self, config: Any) -> SectionT:
        """This plugin's validated section of ``config`` (built by ``config_model``)."""
        model = self.section_model()
        node: Any = config
        for part in self.section:
            node = getattr(node, part, None)
        if not isinstance(node, model):
            raise TypeError(
                f"config section {'.'.join(self.section)} is not validated as {model.__name__}; "
                "build the config with the plugins (mlvigil.app.plugins.load_config)"
            )
        return node


def config_model(plugins: Sequence[Plugin[Any]], base: type[BaseModel] | None = None) -> type[BaseModel]:
    """``base`` (default: the kernel's ``Config``) with a typed field for each plugin's section
    (nested sections included); plugins without a section add nothing."""
    if base is None:
        from mlvigil.core.config import Config

        base = Config
    return _with_sections(base, (), [p for p in plugins if p.section])


def _with_sections(
    model: type[BaseModel], prefix: tuple[str, ...], plugins: Sequence[Plugin[Any]]
) -> type[BaseModel]:
    from pydantic import BaseModel, Field, create_model

    inside = [p for p in plugins if len(p.section) > len(prefix) and p.section[: len(prefix)] == prefix]
    fields: dict[str, Any] = {}
    for key in dict.fromkeys(p.section[len(prefix)] for p in inside):
        here = (*prefix, key)
        owners = [p for p in inside if p.section == here]
        if len(owners) > 1:
            raise ValueError(f"config section {'.'.join(here)} claimed by {[p.name for p in owners]}")
        if owners:
            section: type[BaseModel] = owners[0].section_model()
        else:  # a section that holds plugin sections, e.g. ``detectors``
            existing = model.model_fields.get(key)
            parent = existing.annotation if existing is not None else None
            if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
                raise ValueError(f"config section {'.'.join(here)} is not a section of {model.__name__}")
            section = _with_sections(parent, here, inside)
        fields[key] = (section, Field(default_factory=section))
    if not fields:
        return model
    extended: type[BaseModel] = create_model(
        model.__name__, __base__=model, __module__=model.__module__, **fields
    )
    return extended
