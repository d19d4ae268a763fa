# The two README commands:  `make demo`  (set up + run the main job)  and  `make test`  (set up + run the tests).
PY := .venv/bin/python

.PHONY: env demo test lint
env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/demo.py $(DEMO_ARGS)

lint: env
	.venv/bin/ruff check .

test: env lint
	$(PY) -m pytest -q -n 2 --durations=15 $(PYTEST_ARGS)
