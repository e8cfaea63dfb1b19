"""The Discord bot (hikari): gateway or HTTP interactions, an adapter over the frontend core."""
