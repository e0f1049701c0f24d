"""Deploy tooling (never deployed): package, deploy, destroy and smoke-test one stage on AWS."""
