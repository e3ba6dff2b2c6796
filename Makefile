# semqa: `make serve` and `make test` work on a fresh clone (they install first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A CPU build of this torch is what this machine's pip serves; installing it first keeps pip from
# resolving torch itself and pulling a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install browser serve index test lint bench bench-ray soak clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

index: install
	$(BIN)/semqa index

serve: index
	$(BIN)/semqa serve

# The web page's test drives Debian's Chromium and ChromeDriver (Selenium, no browser download): installed
# from apt only when missing, as root or with sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing Debian's chromium and chromium-driver for the browser test"; \
		$(SUDO) apt-get -o Acquire::Retries=3 update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq chromium chromium-driver; \
	fi

test: install browser
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/build_throughput.py
	$(BIN)/python bench/query_latency.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/interfaces.py
	$(BIN)/python bench/encoder_backends.py
	$(BIN)/python bench/parquet_read.py

# The Ray build against the single-process build on 600 SciFact abstracts (cache off), and the scaling table.
bench-ray: install
	$(BIN)/python bench/ray_build.py --docs 600 --rounds 3

# Load test, not in the suite: 16 clients against 2 workers, questions mixed with upserts and deletes.
soak: install
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .semqa *.egg-info .pytest_cache
