"""Test-suite wide settings.

Hypothesis profiles: "dev" (the default, hypothesis's 100 examples per property) and "ci", which
draws more examples per property and is loaded when the environment variable CI is set (GitHub
Actions and `.ci/run` set it). `HYPOTHESIS_PROFILE=ci` selects it locally. A test's own
`@settings(max_examples=...)` still wins over the profile.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev")
settings.register_profile("ci", max_examples=400, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
