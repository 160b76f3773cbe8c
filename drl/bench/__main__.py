"""``python -m drl.bench``: see ``drl/bench/__init__.py``."""

if __name__ == "__main__":
    from drl.bench.cli import main
    from drl.cli import run_cli

    run_cli("drl.bench", main)
