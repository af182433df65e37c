"""The chaos suite runs on the same 4-node dev cluster as tests/cluster."""

from tests.cluster.conftest import dev_cluster  # noqa: F401 - the fixture, for tests/chaos
