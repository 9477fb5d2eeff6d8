"""The plugin model: how a capability package (alerts, drift, GPU health, ...) joins the service.

A package exports one ``Plugin``: where its section sits in the config file, the typed model
of that section, and ``build(section, ctx)``, which returns the parts the service runs
(detectors and components) and may add API routes to ``ctx.routes``. The application layer
lists the plugins it ships (``mlvigil.app.plugins.PLUGINS``); this module knows none of them.

The config is validated once: ``config_model(plugins)`` is the kernel's ``Config`` with each
plugin's section typed by its own model, so one ``model_validate`` checks every key, and an
error names the key's full path (``alerts.routes.0.group_wait``) wherever it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, Field, create_model

from mlvigil.core.config import Config

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext

SectionT = TypeVar("SectionT", bound=BaseModel)


@dataclass(frozen=True)
class Plugin(Generic[SectionT]):
    """One capability package's entry in the service."""

    #: Short name, used in logs and errors.
    name: str
    #: Path of its section in the config file: ``("alerts",)``, ``("detectors", "drift")``.
    section: tuple[str, ...]
    #: The section's model (strict: an unknown key is an error); its defaults apply when absent.
    config: type[SectionT]
    #: The parts to run for a validated section: detectors (run by the detector loop) and
    #: components (started and stopped by the service); routes go on ``ctx.routes``. A
    #: ValueError is a setting the plugin cannot use, reported as a config error.
    build: Callable[[SectionT, ServiceContext], Sequence[Any]]

    def section_of(self, config: Config) -> SectionT:
        """This plugin's validated section of ``config`` (built by ``config_model``)."""
        node: Any = config
        for part in self.section:
            node = getattr(node, part, None)
        if not isinstance(node, self.config):
            raise TypeError(
                f"config section {'.'.join(self.section)} is not validated as {self.config.__name__}; "
                "build the config with the plugins (mlvigil.app.plugins.load_config)"
            )
        return node


def config_model(plugins: Sequence[Plugin[Any]], base: type[BaseModel] = Config) -> type[BaseModel]:
    """``base`` with a typed field for each plugin's section (nested sections included)."""
    return _with_sections(base, (), plugins)


def _with_sections(
    model: type[BaseModel], prefix: tuple[str, ...], plugins: Sequence[Plugin[Any]]
) -> type[BaseModel]:
    inside = [p for p in plugins if len(p.section) > len(prefix) and p.section[: len(prefix)] == prefix]
    fields: dict[str, Any] = {}
    for key in dict.fromkeys(p.section[len(prefix)] for p in inside):
        here = (*prefix, key)
        owners = [p for p in inside if p.section == here]
        if len(owners) > 1:
            raise ValueError(f"config section {'.'.join(here)} claimed by {[p.name for p in owners]}")
        if owners:
            section: type[BaseModel] = owners[0].config
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
