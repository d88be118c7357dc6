"""Which Django apps are integration types: every package inside an integration root.

An integration root is a package whose sub-packages are integration types: ``integrations``
itself, plus each package the operator lists in setting ``INTEGRATION_PACKAGES`` (for
integrations kept outside this repository). Every sub-package of a root, except ``base``,
``migrations`` and names starting with ``_``, is a Django app: config/settings.py appends
:func:`integration_apps` to ``INSTALLED_APPS``, so adding a folder is all it takes to add a
type, its models, migrations, admin and tasks.

Settings call this before Django is set up, so it looks at folders only: it imports no
integration code (at most a root package's ``__init__``) and nothing from Django but its
exceptions.
"""

from __future__ import annotations

import importlib.util
import pkgutil
import re
from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured

#: The root that ships with Metronome.
DEFAULT_ROOT = "integrations"
#: Sub-packages of a root that are not integration types.
NOT_INTEGRATIONS = frozenset({"base", "migrations"})

_DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def integration_roots(extra: Iterable[str] = ()) -> list[str]:
    """``integrations`` followed by the ``extra`` roots, blanks and repeats dropped."""
    names = [DEFAULT_ROOT, *(name.strip() for name in extra)]
    return list(dict.fromkeys(name for name in names if name))


def integration_apps(roots: Iterable[str] = (DEFAULT_ROOT,)) -> list[str]:
    """The dotted names of the integration apps inside ``roots``, in root then name order.

    Raises ImproperlyConfigured, naming the setting to fix, when a root is not an
    importable package.
    """
    apps: list[str] = []
    for root in roots:
        for info in sorted(pkgutil.iter_modules(_package_path(root)), key=lambda i: i.name):
            if info.ispkg and info.name not in NOT_INTEGRATIONS and not info.name.startswith("_"):
                apps.append(f"{root}.{info.name}")
    return apps


def _package_path(root: str) -> list[str]:
    """The folders of package ``root``, or ImproperlyConfigured saying what is wrong."""
    fix = (
        "INTEGRATION_PACKAGES is a comma list of importable packages whose sub-packages are "
        "integration types, e.g. INTEGRATION_PACKAGES=acme_integrations with "
        "acme_integrations/__init__.py and acme_integrations/<type>/ on PYTHONPATH."
    )
    if not _DOTTED_NAME.match(root):
        raise ImproperlyConfigured(
            f"Integration package {root!r} is not a Python package name. {fix}"
        )
    try:
        spec = importlib.util.find_spec(root)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"Integration package {root!r} cannot be found ({exc}). {fix}"
        ) from None
    if spec is None:
        raise ImproperlyConfigured(
            f"Integration package {root!r} cannot be found on the Python path. {fix}"
        )
    if spec.submodule_search_locations is None:
        raise ImproperlyConfigured(
            f"Integration package {root!r} is a module, not a package (a folder). {fix}"
        )
    return list(spec.submodule_search_locations)
