"""The named experiments, one YAML each (``python -m drl.train NAME``); installed as package data of
``drl.experiments``. Files starting with "_" are bases that others ``inherit``."""
