"""`python -m local.provision`: provision the template on an endpoint, print the outputs."""

from __future__ import annotations

from local.provision.provisioner import main

raise SystemExit(main())
