"""The worlds, one module per env kind (atari, doom, gym, torch_native) and beside each a light module with its
config section (``*_config.py``, ``doom/config.py``). They are registered in ``drl/registry.py`` and built with
``drl.vec_env.make_env``; this package imports nothing, so naming a config section imports no env."""
