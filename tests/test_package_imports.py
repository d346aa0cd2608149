"""The package's public names are imported on first use: a local simulator process does not
load the client, and every public name still resolves as before (``simsync.sweep`` stays
the function after its submodule is imported)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=50, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_local_simulator_process_does_not_load_the_client() -> None:
    out = _run("""
        import sys, urllib.request
        from simsync.localsim import LocalSimulator
        with LocalSimulator(port=0) as sim:
            with urllib.request.urlopen(sim.http_url + "/health", timeout=20) as resp:
                assert resp.status == 200
            loaded = sorted(m for m in sys.modules
                            if m.startswith("simsync.") and not m.startswith("simsync.localsim"))
        print(" ".join(loaded), "requests" in sys.modules, "tenacity" in sys.modules)
    """)
    assert out.split() == ["simsync._version", "simsync.errors", "False", "False"]


def test_every_public_name_resolves_and_sweep_stays_the_function() -> None:
    out = _run("""
        import sys, types
        import simsync
        assert "simsync.client" not in sys.modules
        for name in simsync.__all__:
            assert getattr(simsync, name) is not None, name
        assert set(simsync.__all__) <= set(dir(simsync))
        from simsync.sweep import sweep as function
        import simsync.sweep
        assert simsync.sweep is function and not isinstance(simsync.sweep, types.ModuleType)
        assert sys.modules["simsync.sweep"].sweep is function
        from simsync import Client, Session
        assert Client.__module__ == "simsync.client" and Session.__module__ == "simsync.session"
        try:
            simsync.NoSuchName
        except AttributeError as e:
            print(e)
    """)
    assert out.strip() == "module 'simsync' has no attribute 'NoSuchName'"
