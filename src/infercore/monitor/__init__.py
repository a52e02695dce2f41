"""Production monitoring: reference profiles, drift, live quality and input screening.

    import infercore as ic
    profile = ic.monitor.Profile.build("model.onnx", "calib/")      # or: infercore profile MODEL --data DIR -o profile.json
    mon = ic.monitor.Monitor(profile, sample_rate=0.1, window=1000)
    mon.observe(feeds, outputs, request_id="r1"); mon.feedback("r1", label=3); mon.state()
    screen = ic.monitor.Screen(profile, threshold=3.0, action="reject"); screen.check(feeds)

numpy only on import; the KS and chi-square tests import scipy when they first run (the ``monitor``
extra). ``infercore serve`` runs a Monitor per model version (``monitoring:`` in its config.yaml).
"""

from __future__ import annotations

from .features import Featurizer
from .monitor import Monitor
from .profile import PROFILE_FORMAT, PROFILE_VERSION, Profile
from .screening import ACTIONS, Screen, ScreenResult

__all__ = [
    "ACTIONS",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "Featurizer",
    "Monitor",
    "Profile",
    "Screen",
    "ScreenResult",
]
