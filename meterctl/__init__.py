"""meterctl: the operator CLI for Bedrock SaaS Metering (users, login, chat, usage, SQL, plans)."""
