"""Choosing a driver: forcing the green driver without gevent fails early and says how to fix it."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_GEVENT = """
import sys
sys.modules["gevent"] = None  # as if gevent were not installed
import hybridpool
try:
    hybridpool.create_pool("host=/nonexistent", driver="gevent")
except Exception as ex:
    print(type(ex).__name__, ex)
"""


def test_forcing_the_gevent_driver_without_gevent_names_the_setting_and_the_fix():
    done = subprocess.run([sys.executable, "-c", WITHOUT_GEVENT], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith(
        "ImproperlyConfigured hybridpool setting 'driver' = 'gevent' needs gevent, which cannot be imported"), done
    assert "pip install 'hybridpool[gevent]'" in done.stdout
