"""The Telegram frontend: ``/distill`` from a chat, live progress in one edited message, the LoRA back in the chat.

settings.py (flags, env, credentials) -> bot.py (handlers, lifecycle) -> progress.py (paced edits) and
reattach.py (following jobs across restarts); media.py fetches pictures from Telegram, webhook.py takes updates
in webhook mode, trainer.py names the daemon seam.
"""
