import socket

import pytest


def test_network_is_blocked_in_tests():
    with pytest.raises(Exception, match="(?i)socket|blocked|not allowed"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
