# Developer entry points. A fresh machine needs only: make test   (or: make demo)
SHELL := /bin/bash
VENV ?= .venv
ENV := . scripts/env.sh &&
COLCON_FLAGS := --paths . --build-base build --install-base install --event-handlers console_direct-
PYTEST_FLAGS ?=

.PHONY: setup build test test-core demo teleop deploy bench lock clean

setup:  ## create/refresh the Python 3.12 venv with ROS 2 wheels and pinned dependencies
	@bash scripts/setup_env.sh

build: setup  ## colcon build the package (interfaces + Python + executables) into install/
	@bash scripts/build.sh

test: build  ## unit + integration tests (real rclpy processes, MuJoCo sim, LeRobotDataset)
	@$(ENV) python -m pytest test $(PYTEST_FLAGS)

test-core: setup  ## the ROS-free core tests only (no build needed)
	@$(ENV) python -m pytest test/core $(PYTEST_FLAGS)

demo: build  ## the finetune profile on the simulated arm (bounded run, prints the report location)
	@bash scripts/demo.sh $(ARGS)

teleop: build  ## record demonstrations on the simulated arm with the scripted expert
	@$(ENV) python -m vla_mbpo_ros.bringup teleop robot:=sim $(ARGS)

deploy: build  ## run the safety-gated policy executor only
	@$(ENV) python -m vla_mbpo_ros.bringup deploy robot:=sim $(ARGS)

bench: build  ## benchmarks (not part of the tests); each prints its figures as ratios
	@$(ENV) for b in bench/*_bench.py; do echo "== $$b"; python $$b || exit 1; done

lock:  ## re-pin requirements/constraints.txt from a fresh resolve of requirements/base.in
	@bash scripts/lock.sh

clean:
	rm -rf build install log
