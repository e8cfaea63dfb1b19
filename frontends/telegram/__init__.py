"""The Telegram frontend: ``/distill`` from a chat, live progress in one edited message, the LoRA back in the chat.

settings.py (flags, env, credentials) -> bot.py (handlers, lifecycle) -> platform.py (the Bot API calls the
frontend core makes: send, edit, upload); media.py fetches pictures from Telegram, webhook.py takes updates in
webhook mode. Following jobs, pacing and re-attaching are the core's (frontends.follow, frontends.live).
"""
