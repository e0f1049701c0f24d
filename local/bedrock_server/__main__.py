"""`python -m local.bedrock_server`: serve the Converse API until SIGTERM or SIGINT."""

from __future__ import annotations

from local.bedrock_server.server import main

raise SystemExit(main())
