"""Learning rules only (act / loss / update; the ``drl.agent.Agent`` interface). Built-ins register here, lazily
(``"module:Class"``), so validating a config imports no torch; ``drl.agent.make_agent`` builds one."""
from drl.registry import register_agent

register_agent("dqn", "drl.agents.dqn:DQN")
register_agent("drqn", "drl.agents.drqn:DRQN")
