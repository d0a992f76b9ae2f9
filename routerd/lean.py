"""Keep routerd small on a router: leave out two imports it does not use.

Measured on routerd with the MQTT sink (docs/performance.md):

- pydantic looks for plugins through ``importlib.metadata`` entry points the
  first time it builds a model. That import (email, zipfile, shutil, bz2,
  lzma, csv) and the scan of every installed distribution cost about 1 MB of
  RSS and, on a router's flash, start-up time. routerd uses no pydantic
  plugins, so before pydantic is imported it installs a plugin loader that
  finds none: what ``PYDANTIC_DISABLE_PLUGINS=__all__`` decides, without the
  scan's imports.
- paho-mqtt imports ``urllib.request`` (http.client, email, tempfile: about
  1 MB) only to read proxy settings, which it reads only when PySocks is
  installed. Without PySocks, routerd registers ``urllib.request`` as a lazy
  module (the standard ``importlib.util.LazyLoader``): paho 1.6 (OpenWrt's
  feed) then never loads it. paho 2.x's ``import urllib.request`` statement
  loads it at once on Python 3.11, which is correct, only not smaller.

Only routerd's entry point (``routerd.cli``) calls :func:`apply`; clusterd's
(``clusterd.cli``) calls :func:`skip_pydantic_plugins`; other importers of
``routerd.core`` (tests) get the usual behaviour.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterable
from typing import Any

PLUGIN_LOADER = "pydantic.plugin._loader"


def _no_plugins() -> Iterable[Any]:
    return ()


def skip_pydantic_plugins() -> bool:
    """Install a plugin loader that finds none, unless pydantic's own is loaded; True when installed."""
    if PLUGIN_LOADER in sys.modules:
        return False
    stub = types.ModuleType(PLUGIN_LOADER, "routerd: no pydantic plugins (see routerd/lean.py)")
    stub.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[PLUGIN_LOADER] = stub
    return True


def lazy(name: str) -> bool:
    """Register ``name`` as a module loaded on its first attribute access; True when registered.

    Python 3.11's LazyLoader is not thread-safe on that first access, so the
    main thread must be the first to touch the module (routerd's webhook sink
    does so when it is imported).
    """
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return False
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return True


def apply() -> None:
    """Both trims above; call before pydantic and paho-mqtt are imported."""
    skip_pydantic_plugins()
    if importlib.util.find_spec("socks") is None:
        lazy("urllib.request")
