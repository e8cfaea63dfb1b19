"""The Slack frontend: ``/distill`` and image uploads in Slack, one live job message per job; ``/serve`` to
generate pictures with LoRAs (``/models`` lists the models it may use), and ``/loras``, ``/lora``, ``/info``,
``/stats`` to look after them.

Flow: settings.py (configuration) -> server.py (Socket Mode or HTTP endpoint) -> app.py (listeners: ack at
once, work in tasks; serve.py and library.py for the commands besides /distill) -> files.py (private
uploads) -> the daemon (frontends.client) -> the frontend core (frontends.follow: one follower per job,
paced edits, re-attach, pictures delivered once) -> platform.py (the Web API calls the core makes: Block Kit
messages, updates, thread uploads); blocks.py holds the short replies; manifest.yaml creates the Slack app.
"""
