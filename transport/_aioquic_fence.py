"""Refuse an aioquic release the transport was not written and tested against.

`transport.quic`, `transport.quic_crypto`, `transport.connection` and `transport.endpoint`
subclass and patch aioquic's private names (the table is in transport/__init__.py). An
aioquic outside `SUPPORTED` may import fine and then misbehave on the wire, so importing
`transport` checks the version first (this module runs the check when it is imported,
and transport/__init__.py imports it before anything that touches aioquic) and raises
`UnsupportedAioquic` with the fix in its message.

The version comes from `aioquic.__version__`: aioquic's own build reads its version from
that attribute, so it is what the distribution says, and the transport imports the
`aioquic` package anyway (its __init__ is that one line). `importlib.metadata` would cost
a node ~25-35 ms of start-up to import and ~3 ms per look-up, and serve keeps it out on
purpose (tests/unit/test_startup_imports.py); it is only the fallback for an aioquic
without the attribute.

To try a new aioquic release: widen `SUPPORTED` here and the `aioquic` line of
pyproject.toml together (tests/unit/test_aioquic_fence.py checks they agree), then go
through the table in transport/__init__.py and run tests/unit/test_transport_*.py and
tests/integration/test_transport_*.py.
"""

from __future__ import annotations

# >= the first, < the second: the same range as the `aioquic` line of pyproject.toml
SUPPORTED: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 7, 2), (1, 8))
REQUIREMENT = "aioquic>=1.7.2,<1.8"

_PRE_RELEASES = ("a", "b", "c", "rc", "alpha", "beta", "pre", "preview", "dev")


class UnsupportedAioquic(RuntimeError):
    """The installed aioquic is not one the transport's patches were tested against."""

    def __init__(self, installed: str | None) -> None:
        self.installed = installed
        self.requirement = REQUIREMENT
        spec = REQUIREMENT.removeprefix("aioquic")
        have = (
            "aioquic is not installed" if installed is None else f"aioquic {installed} is installed"
        )
        super().__init__(
            f"{have}, but shardfleet's transport supports aioquic {spec} only (it patches "
            f"aioquic internals written and tested against that range). "
            f"Install a supported release: pip install '{REQUIREMENT}'"
        )


def installed_version() -> str | None:
    """The installed aioquic's version, None if aioquic cannot be imported."""
    try:
        import aioquic
    except ImportError:
        return None
    version = getattr(aioquic, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib import metadata  # only for an aioquic without __version__

    try:
        return metadata.version("aioquic")
    except metadata.PackageNotFoundError:
        return "unknown"


def is_supported(version: str) -> bool:
    """PEP 440 order for the versions aioquic publishes: a pre-release of the lower bound
    is below it, and `< 1.8` excludes 1.8's pre-releases (as pip does). (No regex: compiling
    one would cost start-up more than the rest of this module.)"""
    text = version.strip().lower().removeprefix("v")
    digits = len(text) - len(text.lstrip("0123456789."))
    release_text, rest = text[:digits].rstrip("."), text[digits:]
    parts = release_text.split(".")
    if not all(part.isdigit() for part in parts):
        return False
    release = _padded(tuple(int(part) for part in parts))
    pre = rest.lstrip("-_.").startswith(_PRE_RELEASES)  # not "+local"
    low, high = (_padded(bound) for bound in SUPPORTED)
    if release < low or release >= high:
        return False
    return not (pre and release == low)


def _padded(release: tuple[int, ...]) -> tuple[int, ...]:
    return release + (0,) * (3 - len(release))


def check() -> str:
    """The installed aioquic's version; raises UnsupportedAioquic outside `SUPPORTED`."""
    version = installed_version()
    if version is None or not is_supported(version):
        raise UnsupportedAioquic(version)
    return version


AIOQUIC_VERSION = check()
