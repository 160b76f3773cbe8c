"""Learning rules only (act / loss / update; the ``drl.agent.Agent`` interface). The built-ins are registered in
``drl/registry.py``, lazily (``"module:Class"``), so validating a config imports no torch; ``drl.agent.make_agent``
builds one."""
