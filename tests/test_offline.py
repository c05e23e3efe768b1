import socket

import pytest


def test_network_is_blocked_in_tests():
    with pytest.raises(Exception, match="(?i)socket|blocked|not allowed"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_a_missing_optional_package_names_the_install_command(monkeypatch, tmp_path):
    import sys

    from indexes.errors import MissingDependencyError
    from indexes.vector import open_index

    monkeypatch.setitem(sys.modules, "chromadb", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'rag-kb\[chroma\]'"):
        open_index("chroma", tmp_path, 8, 0)
