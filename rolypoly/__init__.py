"""rolypoly: a real-time adaptive drum machine that learns to sit in the pocket with its partner.

The project is built in floors, each importing only the floors below it
(``docs/architecture.md``):

- ``rolypoly`` (this package): the core -- score, drum map, grid, feature
  rows, agents, the take format, targets, fine-tuning, the session store,
  groove models and the signal processing live and offline code share;
- ``rolypoly.realtime``: what a live performance runs (clocks, sources,
  engine, outputs, service, devices);
- ``rolypoly.pretrain``: the Groove MIDI Dataset pipeline, training and evaluation;
- ``rolypoly.lab``: benchmarks, experiments, the virtual partner, synthetic audio;
- ``rolypoly.cli``: the ``rolypoly`` command, on top.

In a checkout ``realtime/``, ``pretrain/`` and ``lab/`` sit beside this
folder, at the top of the repository; an installed wheel puts them inside
the package (``pyproject.toml``, ``package-dir``). Both import them as
``rolypoly.realtime`` and so on, never as top-level packages of their own
(``realtime`` on PyPI is another project).
"""
from pathlib import Path as _Path

__version__ = "0.1.0"

#: The timing agents' kinds (:mod:`rolypoly.agents` holds the models and re-exports this name).
#: Defined here so that the command line offers them without importing torch.
AGENT_KINDS = ("lstm", "seq2seq")

#: Subpackages that live beside this folder in a checkout.
_FLOORS = ("realtime", "pretrain", "lab")


def _checkout_floors() -> None:
    here = _Path(__file__).resolve().parent
    top = here.parent
    if all((here / f).is_dir() for f in _FLOORS):
        return  # an installed wheel: the floors are inside the package already
    if all((top / f / "__init__.py").is_file() for f in _FLOORS):
        # A checkout: look for rolypoly.<floor> in the repository's top folder too.
        __path__.append(str(top))  # noqa: F821 (the package's own __path__)


_checkout_floors()
