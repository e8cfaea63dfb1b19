# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint protos clean gpu-wheels

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build from this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/distillery demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check daemon frontends tests scripts bench
	$(VENV)/bin/mypy

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

# The wheels bench/gpu_check.sh installs (no network where it runs): exactly the pins in bench/gpu_wheels.txt,
# nothing else, into a git-ignored folder that travels with the working tree (`carry`: .gpuwheels). cp312/ is for
# the GPU machine (Python 3.12, x86-64); host/ is the same pins for this interpreter, for `gpu_check.sh --smoke`.
GPU_WHEELS := .gpuwheels
GPU_PLATFORMS := $(foreach n,2_28 2_27 2_17,--platform manylinux_$(n)_x86_64) --platform manylinux2014_x86_64
WHEEL_PINS := --no-deps --only-binary=:all: -r bench/gpu_wheels.txt

$(GPU_WHEELS)/.complete: bench/gpu_wheels.txt $(STAMP)
	rm -rf $(GPU_WHEELS)
	$(PY) -m pip download -q $(WHEEL_PINS) --python-version 3.12 --implementation cp $(GPU_PLATFORMS) \
		-d $(GPU_WHEELS)/cp312
	$(PY) -m pip download -q $(WHEEL_PINS) -d $(GPU_WHEELS)/host
	# face-recognition-models is a 100 MB source package: only the two files dlib reads travel, as a namespace
	# package that daemon/pipeline/face.py finds the same way it finds the installed one.
	mkdir -p $(GPU_WHEELS)/face/face_recognition_models/models
	$(PY) -c "import shutil, sys; from daemon.pipeline import face; \
		[shutil.copy(face.models_folder() / n, sys.argv[1]) for n in (face.LANDMARKS_MODEL, face.RECOGNITION_MODEL)]" \
		$(GPU_WHEELS)/face/face_recognition_models/models
	touch $@

gpu-wheels: $(GPU_WHEELS)/.complete

clean:
	rm -rf $(VENV) state
