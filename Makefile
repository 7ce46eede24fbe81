# flowpath — developer and CI entry points.
#
#   make test     mypy + unit tier + kernel tier (host kernel if capable, else a
#                 virtme-ng VM of Debian's kernel under TCG); summary at the end
#   make unit     unit tier only            make mypy    type check only
#   make kernel   kernel tier only          make demo    flowpath scenario, narrated (VM)
#   make demo-smoke   the bare kernel smoke scenario (netdevsim, flower counters, refusal)
#   make vm-tooling   install/build what the VM needs (apt, virtme-ng, netdevsim.ko)
#   make hwtest   hwtests/ against a real NIC (FLOWPATH_HW_DEV=<netdev>)
#   make clean    remove .venv and .cache
#
# The venv is .venv (python3 -m venv; pip install -e '.[test]'), rebuilt when
# pyproject.toml changes.  Kernel tier details: tools/kernel_tier.py.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flowpath-installed
export FLOWPATH_MAKE_T0 := $(shell date +%s.%N)

.PHONY: test unit kernel mypy demo demo-smoke venv vm-tooling netdevsim hwtest clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

test: venv
	@$(PY) tools/test_all.py

mypy: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -m "not kernel"

kernel: venv
	$(PY) tools/kernel_tier.py

demo: venv
	$(PY) tools/kernel_tier.py --mode demo

demo-smoke: venv
	$(PY) tools/kernel_tier.py --mode demo --demo-script tools/demo_smoke.py

vm-tooling: venv
	tools/ensure_vm_tooling.sh $(VENV)

netdevsim:
	tools/build_netdevsim.sh

hwtest: venv
	$(PY) -m pytest hwtests

clean:
	rm -rf $(VENV) .cache

# tc flower install/dump rates vs tc, in the kernel tier's VM (docs/performance.md)
.PHONY: bench-offload
bench-offload: venv
	bench/run_in_vm.sh -- $(PY) bench/tc_install.py --sizes $${SIZES:-1000,10000}
