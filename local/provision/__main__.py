"""`python -m local.provision`: provision the template on an endpoint, print the outputs."""

from __future__ import annotations

import sys

from local.provision.provisioner import main

sys.exit(main())
