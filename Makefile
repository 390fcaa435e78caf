# Developer entry points. A fresh machine needs only: make test   (or: make demo)
# ROS_DISTRO=jazzy (default, the LTS of robot workstations) or kilted; each distro gets its own
# venv, build and install folders (.venv, build, install for jazzy; .venv-kilted, ... for kilted).
SHELL := /bin/bash
ROS_DISTRO ?= jazzy
_suffix := $(if $(filter jazzy,$(ROS_DISTRO)),,-$(ROS_DISTRO))
export ROS_DISTRO
export VENV ?= .venv$(_suffix)
export BUILD_BASE ?= build$(_suffix)
export INSTALL_BASE ?= install$(_suffix)
ENV := . scripts/env.sh &&
# The pretrained tiny UMM (make world-model); config/finetune_sim.yaml reads it from the default place.
WORLD_MODEL_DIR ?= $(HOME)/.cache/vla_mbpo_ros/umm_sim
PYTEST_FLAGS ?=
# What make test runs: the whole suite, or e.g. TESTS="test/core/test_safety.py test/test_bag.py".
TESTS ?= test

.PHONY: setup build test test-core demo teleop deploy world-model bench lock clean

setup:  ## system packages (apt, with sudo when not root) + the Python 3.12 venv with the ROS 2 wheels
	@bash scripts/setup_system.sh
	@bash scripts/setup_env.sh

build: setup  ## colcon build the package (interfaces + Python + executables) into install/
	@bash scripts/build.sh

test: build  ## unit + integration tests (real rclpy processes, MuJoCo sim, LeRobotDataset)
	@$(ENV) python -m pytest $(TESTS) $(PYTEST_FLAGS)

test-core: setup  ## the ROS-free core tests only (no build needed)
	@$(ENV) python -m pytest test/core $(PYTEST_FLAGS)

world-model: setup  ## pretrain the tiny UMM on a simulated play corpus, once (resumable; make demo finetunes it)
	@$(ENV) python -m vla_mbpo_ros.core.world_model.pretrain --out "$(WORLD_MODEL_DIR)"

demo: build world-model  ## the finetune profile on the simulated arm (bounded run, prints the report location)
	@bash scripts/demo.sh $(ARGS)

teleop: build  ## record demonstrations on the simulated arm with the scripted expert
	@$(ENV) python -m vla_mbpo_ros.bringup teleop robot:=sim $(ARGS)

deploy: build  ## run the safety-gated policy executor only
	@$(ENV) python -m vla_mbpo_ros.bringup deploy robot:=sim $(ARGS)

bench: build  ## benchmarks (not part of the tests); each prints its figures as ratios
	@$(ENV) for b in bench/*_bench.py; do echo "== $$b"; python $$b || exit 1; done

lock:  ## re-pin requirements/constraints-$(ROS_DISTRO).txt from a fresh resolve
	@bash scripts/lock.sh

clean:
	rm -rf $(BUILD_BASE) $(INSTALL_BASE) log
