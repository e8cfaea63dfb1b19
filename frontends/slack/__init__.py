"""The Slack frontend: ``/distill`` and image uploads in Slack, one live job message per job; ``/serve`` to
generate pictures with LoRAs, and ``/loras``, ``/lora``, ``/info``, ``/stats`` to look after them.

Flow: settings.py (configuration) -> server.py (Socket Mode or HTTP endpoint) -> app.py (listeners: ack at
once, work in tasks; serve.py and library.py for the commands besides /distill) -> files.py (private
uploads) -> the daemon (daemon.py: the client seam) -> jobs.py (one follower per job, pictures into its
thread) -> progress.py (paced message edits) -> blocks.py (Block Kit around render's text); reattach.py picks
jobs up again after a restart; manifest.yaml creates the Slack app.
"""
