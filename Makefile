# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv from the pinned requirements.lock when it is missing or stale.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the window and its tests need (Qt's xcb platform, a virtual screen).
DEB_PACKAGES := xvfb xauth libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 \
	libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 \
	libxcb-xinerama0 libxcb-randr0 libxcb-xkb1

.PHONY: run test lint deps system-deps benchmark clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

deps: $(STAMP)

# Installs missing Debian packages when we can (root or sudo); a no-op when all are present.
system-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: system-deps $(STAMP)
	$(VENV)/bin/mergestudio studio --demo

test: system-deps $(STAMP)
	$(VENV)/bin/ruff check core app tests benchmarks
	$(VENV)/bin/mypy
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check core app tests benchmarks
	$(VENV)/bin/mypy

benchmark: $(STAMP)
	$(PY) benchmarks/merge_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Linux installers (packaging/README.md): freeze with PyInstaller into dist/mergestudio,
# then dist/*.deb and dist/*.tar.gz. PACKAGE_FORMATS=deb skips the tarball (CI);
# DEB_COMPRESSION=xz for releases (minutes instead of seconds, ~25 % smaller).
PACKAGE_STAMP := $(VENV)/.packaging-installed
PACKAGE_FORMATS ?= deb tar
DEB_COMPRESSION ?= zstd

$(PACKAGE_STAMP): packaging/requirements.txt $(STAMP)
	$(PY) -m pip install -q -r packaging/requirements.txt
	touch $(PACKAGE_STAMP)

.PHONY: package
package: system-deps $(STAMP) $(PACKAGE_STAMP)
	@start=$$(date +%s); \
	PYTHONWARNINGS=ignore::DeprecationWarning $(VENV)/bin/pyinstaller --noconfirm --log-level WARN \
		--distpath dist --workpath build/pyinstaller packaging/mergestudio.spec && \
	echo "pyinstaller: $$(( $$(date +%s) - start )) s, bundle $$(du -sh dist/mergestudio | cut -f1)"
	FORMATS="$(PACKAGE_FORMATS)" DEB_COMPRESSION=$(DEB_COMPRESSION) packaging/linux/build.sh
